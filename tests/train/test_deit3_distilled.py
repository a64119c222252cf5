"""A distilled DeiT III (DeiT's distillation token and head on the LayerScale, patch-only-pos_embed ViT) trains on
the built-in digits: hard distillation from a live teacher as typed, soft from a teacher-output cache."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from train_support import DEIT, REPO, SUBPROCESS_ENV

from deit.checkpoints import load_checkpoint, save_checkpoint
from deit.cli import main
from deit.models import build_architecture

STUDENT = ("model.name=deit3_small_distilled_patch16_224",
           "model.args={patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}")
SMALL = ("epochs=1", "data.train_per_class=6", "data.batch_size=20", "progress=false", "log_every=1", "amp=none",
         "teacher.dtype=float32", "schedule.warmup_epochs=0")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=10, img_size=16), path)
    return path


def _is_a_distilled_deit3(run) -> None:
    weights = load_file(str(run / "last.safetensors"))
    assert weights["dist_token"].shape == (1, 1, 32) and weights["head_dist.weight"].shape == (10, 32)
    assert weights["pos_embed"].shape == (1, 16, 32)  # 4x4 patches, no position for cls or dist
    assert "blocks.1.ls2.gamma" in weights
    model = load_checkpoint(run / "last.safetensors")
    assert model.config.distilled and model.config.init_values == 1e-4 and not model.config.prefix_pos_embed
    assert model.config.drop_path_schedule == "uniform"


def test_hard_distillation_from_a_live_teacher_as_typed(teacher, tmp_path):
    out = tmp_path / "hard"
    done = subprocess.run([*DEIT, "train", "--config", "digits-deit-distilled", *STUDENT, *SMALL,
                           f"teacher.checkpoint={teacher}", f"output_dir={out}"], cwd=REPO, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "distillation hard" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert "teacher_top1" in summary["final"] and summary["steps"] == 3
    _is_a_distilled_deit3(out)


def test_soft_distillation_from_the_teacher_cache(teacher, tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "soft"
    soft = ("distillation.type=soft", "distillation.tau=2.0")
    assert main(["teacher-cache", "build", "--config", "digits-deit-distilled", *STUDENT, *SMALL, *soft,
                 f"teacher.checkpoint={teacher}", "--output", str(cache), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", "digits-deit-distilled", *STUDENT, *SMALL, *soft, "teacher.checkpoint=null",
                 f"distillation.teacher_cache={cache}", f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "read from the cache" in printed and "distillation soft" in printed
    _is_a_distilled_deit3(out)
