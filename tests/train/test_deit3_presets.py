"""The DeiT III presets: each one the published command line of README_revenge.md (or, for ViT-M, which has none,
mmpretrain's settings), each passes --dry-run and trains a few steps on a tiny folder; the ViT-B fine-tuning preset
starts from the 192 px pre-training's file and resamples its patch-only position embedding."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from train_support import DEIT, REPO, SUBPROCESS_ENV

from deit.cli import main
from deit.train import load_config
from deit.train.components import build_student
from deit.train.presets import list_presets

# name: (model, model.img_size, drop path, lr, per-GPU batch, GPUs) as the README's command lines give them
# (--model, --input-size, --drop-path, --lr, --batch, --nodes x --ngpus).
PRETRAIN = {
    "deit3-small_pt-in1k": ("deit3_small_patch16_224", None, 0.05, 4e-3, 256, 8),
    "deit3-medium_pt-in1k": ("deit3_medium_patch16_224", None, 0.2, 4e-3, 256, 8),
    "deit3-base_pt-192-in1k": ("deit3_base_patch16_224", 192, 0.2, 3e-3, 256, 8),
    "deit3-large_pt-in1k": ("deit3_large_patch16_224", 192, 0.45, 3e-3, 64, 32),
}
FINETUNE = "deit3-base_ft-224-in1k"
IN1K = (*PRETRAIN, FINETUNE)
PINNED = ("amp=none", "teacher.dtype=float32")
# A narrow model and one small step per epoch: the presets' own recipe, not their size.
SMALL = ("epochs=1", "budget_minutes=null", "data.batch_size=4", "data.num_workers=0", "progress=false",
         "log_every=1", "save_every=0",
         "model.args={embed_dim: 32, depth: 1, num_heads: 2, patch_size: 8}", "model.img_size=32", *PINNED)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ImageNet's layout (train/ and val/ class folders) with 40 px images of two classes."""
    root = tmp_path_factory.mktemp("in1k_like")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(("n01440764", "n01443537")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(root / split / name / f"{i}.JPEG")
    return root


def test_the_presets_are_listed():
    assert {*IN1K, "cifar10-deit3"} <= set(list_presets())


@pytest.mark.parametrize("name", list(PRETRAIN))
def test_pretraining_presets_are_the_published_command_lines(name):
    cfg = load_config(name)
    model, img_size, drop_path, lr, batch, gpus = PRETRAIN[name]
    assert (cfg.model.name, cfg.model.img_size, cfg.model.drop_path) == (model, img_size, drop_path)
    assert cfg.data.batch_size * gpus == 2048 and cfg.data.batch_size == batch and cfg.epochs == 800
    o, s, d = cfg.optim, cfg.schedule, cfg.data
    assert (o.name, o.lr, o.scale_lr, o.weight_decay, o.clip_grad) == ("lamb", lr, False, 0.05, None)
    assert (s.name, s.warmup_epochs, s.warmup_lr, s.min_lr) == ("cosine", 5, 1e-6, 1e-5)
    assert (d.three_augment, d.color_jitter, d.auto_augment, d.reprob, d.smoothing) == (True, 0.3, None, 0.0, 0.0)
    assert (d.mixup, d.cutmix, d.mixup_prob, d.repeated_aug, d.train_crop, d.scale) == (
        0.8, 1.0, 1.0, True, "resized", (0.08, 1.0))
    assert cfg.loss.name == "bce" and cfg.model.preprocessing == {"crop_pct": 1.0}
    assert (cfg.ema.enabled, cfg.ema.decay, cfg.distillation.type) == (True, 0.99996, "none")


def test_the_base_finetuning_preset_is_the_published_command_line():
    cfg = load_config(FINETUNE)
    assert (cfg.model.name, cfg.model.img_size, cfg.model.drop_path) == ("deit3_base_patch16_224", 224, 0.2)
    assert cfg.model.finetune == "runs/deit3-base_pt-192-in1k/last.safetensors"
    assert cfg.epochs == 20 and cfg.data.batch_size * 8 == 512
    o, d = cfg.optim, cfg.data
    assert (o.name, o.lr, o.scale_lr, o.weight_decay) == ("adamw", 1e-5, False, 0.1)
    assert (d.auto_augment, d.three_augment, d.reprob, d.smoothing, d.repeated_aug) == (
        "rand-m9-mstd0.5-inc1", False, 0.0, 0.1, False)
    assert cfg.loss.name == "cross_entropy" and cfg.model.preprocessing == {"crop_pct": 1.0}


def test_the_cifar_preset_is_the_cifar10_deit_student_on_the_deit3_recipe(tmp_path):
    cfg, base = load_config("cifar10-deit3"), load_config("cifar10-deit")
    assert cfg.model.args == base.model.args and cfg.model.img_size == base.model.img_size == 32
    assert (cfg.epochs, cfg.data.batch_size) == (base.epochs, base.data.batch_size)
    o, d = cfg.optim, cfg.data
    assert (o.name, o.lr, o.scale_lr, cfg.loss.name) == ("lamb", 4e-3, False, "bce")
    assert (d.three_augment, d.color_jitter, d.auto_augment, d.reprob, d.smoothing) == (True, 0.3, None, 0.0, 0.0)
    model = build_student(cfg, 10)  # from scratch: LayerScale at the official 1e-4 (timm's deit3_* use 1e-6)
    assert all(torch.all(b.ls1.gamma == 1e-4) and torch.all(b.ls2.gamma == 1e-4) for b in model.blocks)
    assert model.pos_embed.shape[1] == (32 // 4) ** 2  # the patch tokens only
    assert [b.drop_path1.drop_prob for b in model.blocks] == [0.05] * 6  # uniform
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build_student(base, 10).parameters()) \
        + 6 * 2 * 128 - 128  # the scales, and no position for the class token


@pytest.mark.parametrize("name", IN1K)
def test_dry_run(name, folder, capsys):
    assert main(["train", "--config", name, "--dry-run", f"data.root={folder}"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == name and printed["optim"]["scale_lr"] is False


def test_dry_run_as_typed():
    done = subprocess.run([*DEIT, "train", "--config", "cifar10-deit3", "--dry-run"], cwd=REPO, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert (printed["optim"]["name"], printed["loss"]["name"], printed["data"]["three_augment"]) == (
        "lamb", "bce", True)


def _steps(run) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == "step"]


@pytest.mark.parametrize("name", [*PRETRAIN, "cifar10-deit3"])
def test_each_preset_trains_on_a_tiny_folder(name, folder, tmp_path):
    out = tmp_path / name
    data = ("data.dataset=imagefolder", f"data.root={folder}") if name == "cifar10-deit3" else (f"data.root={folder}",)
    assert main(["train", "--config", name, *data, *SMALL, f"output_dir={out}"]) == 0
    steps = _steps(out)
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
    # lr not scaled by the batch: the warm-up climbs towards the preset's lr (a tenth of it or more by the second of
    # the 5 or 1 warm-up epochs of 2 steps), not towards lr x 4 / 512.
    assert steps[-1]["lr"] > load_config(name).optim.lr / 20


def test_the_base_is_pretrained_at_192_and_finetuned_at_224(folder, tmp_path, capsys):
    """At 32 px then 48 px with patch 8 (the presets' 192 -> 224 in small): the fine-tuning reads the pre-training's
    last.safetensors and resamples its patch-only position embedding 4x4 -> 6x6."""
    pt, ft = tmp_path / "pt", tmp_path / "ft"
    assert main(["train", "--config", "deit3-base_pt-192-in1k", f"data.root={folder}", *SMALL,
                 f"output_dir={pt}"]) == 0
    assert load_file(str(pt / "last.safetensors"))["pos_embed"].shape == (1, 16, 32)
    assert main(["train", "--config", FINETUNE, f"data.root={folder}", *SMALL, "model.img_size=48",
                 f"model.finetune={pt / 'last.safetensors'}", f"output_dir={ft}"]) == 0
    assert load_file(str(ft / "last.safetensors"))["pos_embed"].shape == (1, 36, 32)
    capsys.readouterr()
    assert main(["train", "--config", FINETUNE, f"data.root={folder}", *SMALL, f"output_dir={tmp_path / 'x'}"]) == 2
    assert "model.finetune='runs/deit3-base_pt-192-in1k/last.safetensors' is neither" in capsys.readouterr().err
