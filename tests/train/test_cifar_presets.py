"""The CIFAR-10 presets: each passes --dry-run, and trains on a tiny folder in the layout users have (train/ and
test/ class folders of 32 px images); the distilled one from the teacher's checkpoint."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from PIL import Image
from train_support import DEIT, REPO, SUBPROCESS_ENV

from deit.cli import main
from deit.reproduce import load_rows
from deit.train import load_config
from deit.train.presets import preset_writing

PRESETS = ("cifar10-convnet-teacher", "cifar10-airbench-teacher", "cifar10-deit", "cifar10-deit-distilled")
# One small step each: a tiny batch, no loader workers, a narrow model; a fixed epoch, not the presets' budgets.
SMALL = ("epochs=1", "budget_minutes=null", "data.batch_size=8", "data.num_workers=0", "progress=false",
         "eval_every=1")
# The presets' amp and teacher.dtype are auto: fp32 on every machine (bf16 is emulated, far slower, on a CPU
# without AVX512_BF16).
PINNED = ("amp=none", "teacher.dtype=float32")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_dry_run(preset, capsys):
    assert main(["train", "--config", preset, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "img_size: 32" in out and "train_crop: padded" in out


# The CIFAR-10 goals are stated in minutes: the airbench teacher's 30, the students' 60 (at most `epochs`).
BUDGETS = {"cifar10-airbench-teacher": 30, "cifar10-deit": 60, "cifar10-deit-distilled": 60, "cifar10-deit3": 60,
           "cifar10-deit3-distilled": 60}


def test_the_presets_take_their_budgets_and_the_students_distil_from_the_airbench_teacher():
    for name, minutes in BUDGETS.items():
        cfg = load_config(name)
        assert cfg.budget_minutes == minutes and cfg.epochs >= 10, name
        if name.endswith("-distilled"):
            assert cfg.teacher.checkpoint == "runs/cifar10-airbench-teacher/best.safetensors", name
            assert cfg.distillation.type == "hard"
            assert preset_writing(cfg.teacher.checkpoint) == "cifar10-airbench-teacher"
    # The short-schedule recipe (docs/results/cifar10.md): DeiT without RandAugment and Mixup/CutMix; DeiT III keeps
    # its own.
    deit, deit3 = load_config("cifar10-deit").data, load_config("cifar10-deit3").data
    assert (deit.auto_augment, deit.mixup, deit.cutmix) == (None, 0.0, 0.0)
    assert (deit3.three_augment, deit3.mixup, deit3.cutmix, deit3.mixup_prob) == (True, 0.8, 1.0, 0.5)
    # As a user reads it.
    done = subprocess.run([*DEIT, "train", "--config", "cifar10-deit-distilled", "--dry-run"], cwd=REPO,
                          env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and yaml.safe_load(done.stdout)["budget_minutes"] == 60, done.stderr


def test_presets_train_on_a_tiny_folder_and_distil_from_the_teacher(cifar_folder, tmp_path, capsys):
    data = ("data.dataset=imagefolder", f"data.root={cifar_folder}")
    teacher = tmp_path / "teacher"
    # The preset names the CIFAR archive, data.root holds JPEG folders: they are read, and the run says so once.
    assert main(["train", "--config", "cifar10-convnet-teacher", f"data.root={cifar_folder}", *SMALL, *PINNED,
                 f"output_dir={teacher}"]) == 0
    out = capsys.readouterr().out
    assert out.count("no val/ folder: using test/ as the held-out (val) split") == 1
    found = (f"data: {cifar_folder} holds image folders (train/ and test/): data.dataset=imagefolder (the config named "
             "cifar10)")
    assert out.count(found) == 1 and out.count(f"data: {cifar_folder} holds") == 1
    assert yaml.safe_load((teacher / "config.yaml").read_text())["data"]["dataset"] == "imagefolder"
    student = ("model.args={patch_size: 4, embed_dim: 32, depth: 1, num_heads: 2}",)
    assert main(["train", "--config", "cifar10-deit", *data, *SMALL, *PINNED, *student,
                 f"output_dir={tmp_path / 'deit'}"]) == 0
    assert main(["train", "--config", "cifar10-deit-distilled", *data, *SMALL, *PINNED, *student,
                 f"teacher.checkpoint={teacher / 'best.safetensors'}", f"output_dir={tmp_path / 'distilled'}"]) == 0
    summary = json.loads((tmp_path / "distilled" / "summary.json").read_text())
    assert summary["steps"] == 3 and "teacher_top1" in summary["final"] and summary["final"]["num_samples"] == 6


@pytest.mark.slow
def test_the_study_runs_on_an_image_folder(cifar_folder, tmp_path):
    out = tmp_path / "study"
    assert main(["reproduce", "--regime", "cifar10", "--root", str(cifar_folder), "--train-per-class", "4",
                 "--seeds", "0", "--epochs", "1", "--workers", "1", "--output", str(out),
                 "--set", "data.batch_size=4", "data.num_workers=0", *PINNED,
                 "--student-set", "model.args.embed_dim=32", "model.args.depth=1", "model.args.num_heads=2"]) == 0
    rows = load_rows(out / "results.json")
    assert len(rows) == 10 and {r["seed"] for r in rows} == {0}
    cfg = (out / "runs" / "seed0" / "deit-dist-hard" / "config.yaml").read_text()
    assert "dataset: imagefolder" in cfg and "train_per_class: 4" in cfg and "patch_size: 4" in cfg


def test_dry_run_checks_data_root(cifar_folder, tmp_path, capsys, monkeypatch):
    dry = subprocess.run([*DEIT, "train", "--config", "cifar10-convnet-teacher", f"data.root={cifar_folder}",
                          "--dry-run"], cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and yaml.safe_load(dry.stdout)["data"]["dataset"] == "imagefolder"
    assert dry.stderr.count(f"data: {cifar_folder} holds image folders") == 1
    assert main(["train", "--config", "cifar10-convnet-teacher", f"data.root={tmp_path / 'nope'}", "--dry-run"]) == 2
    assert f"data.root {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(loose / f"{i}.jpg")
    assert main(["train", "--config", "cifar10-convnet-teacher", f"data.root={loose}", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no data set (it has 3 .jpg files and no folders)" in err
    assert "image folders ROOT/train/CLASS/*.jpg" in err and "CIFAR python archive" in err
    # Unreadable (simulated: this test may run as root, whom permissions do not stop).
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(["train", "--config", "cifar10-convnet-teacher", f"data.root={cifar_folder}", "--dry-run"]) == 2
    assert f"data.root {cifar_folder} is not readable" in capsys.readouterr().err
