"""The CIFAR-10 presets: each passes --dry-run, and trains on a tiny folder in the layout users have (train/ and
test/ class folders of 32 px images); the distilled one from the teacher's checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deit.cli import main
from deit.reproduce import load_rows

PRESETS = ("cifar10-convnet-teacher", "cifar10-deit", "cifar10-deit-distilled")
# One small step each: a tiny batch, no loader workers, a narrow model.
SMALL = ("epochs=1", "data.batch_size=8", "data.num_workers=0", "progress=false", "eval_every=1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_like")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 2)):
        for c, name in enumerate(("cat", "dog", "ship")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg")
    return root


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_dry_run(preset, capsys):
    assert main(["train", "--config", preset, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "img_size: 32" in out and "train_crop: padded" in out


def test_presets_train_on_a_tiny_folder_and_distil_from_the_teacher(folder, tmp_path, capsys):
    data = ("data.dataset=imagefolder", f"data.root={folder}")
    teacher = tmp_path / "teacher"
    assert main(["train", "--config", "cifar10-convnet-teacher", *data, *SMALL, f"output_dir={teacher}"]) == 0
    assert capsys.readouterr().out.count("no val/ folder: using test/ as the held-out (val) split") == 1
    student = ("model.args={patch_size: 4, embed_dim: 32, depth: 1, num_heads: 2}",)
    assert main(["train", "--config", "cifar10-deit", *data, *SMALL, *student, f"output_dir={tmp_path / 'deit'}"]) == 0
    assert main(["train", "--config", "cifar10-deit-distilled", *data, *SMALL, *student,
                 f"teacher.checkpoint={teacher / 'best.safetensors'}", f"output_dir={tmp_path / 'distilled'}"]) == 0
    summary = json.loads((tmp_path / "distilled" / "summary.json").read_text())
    assert summary["steps"] == 3 and "teacher_top1" in summary["final"] and summary["final"]["num_samples"] == 6


@pytest.mark.slow
def test_the_study_runs_on_an_image_folder(folder, tmp_path):
    out = tmp_path / "study"
    assert main(["reproduce", "--dataset", "imagefolder", "--root", str(folder), "--train-per-class", "4",
                 "--seeds", "0", "--epochs", "1", "--workers", "1", "--output", str(out),
                 "--set", "data.batch_size=4", "data.num_workers=0",
                 "--student-set", "model.args.embed_dim=32", "model.args.depth=1", "model.args.num_heads=2"]) == 0
    rows = load_rows(out / "results.json")
    assert len(rows) == 10 and {r["seed"] for r in rows} == {0}
    cfg = (out / "runs" / "seed0" / "deit-dist-hard" / "config.yaml").read_text()
    assert "dataset: imagefolder" in cfg and "train_per_class: 4" in cfg and "patch_size: 4" in cfg
