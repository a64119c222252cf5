"""The DeiT III recipe (LAMB, BCE, 3-Augment, colour jitter, the simple crop) from the command line, as a user types
it: a run that trains on it, and the settings that cannot go together refused in one line."""

from __future__ import annotations

import json
import math
import subprocess

import yaml
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.cli import main

RECIPE = ("optim.name=lamb", "loss.name=bce", "data.three_augment=true", "data.color_jitter=0.3",
          "data.train_crop=simple", "data.auto_augment=null", "data.reprob=0", "data.smoothing=0")


def _deit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*DEIT, *args], env={**SUBPROCESS_ENV, "PYTHONPATH": str(REPO / "src")},
                          capture_output=True, text=True, timeout=120)


def test_a_run_trains_on_the_deit3_recipe(tmp_path):
    out = tmp_path / "run"
    args = tiny_overrides(out, distilled=False, extra=("epochs=1", *RECIPE))
    result = _deit("train", "--config", "digits-convnet-teacher", *args)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["optim"]["name"], cfg["loss"]["name"], cfg["data"]["train_crop"]) == ("lamb", "bce", "simple")
    assert cfg["data"]["three_augment"] is True and cfg["data"]["color_jitter"] == 0.3
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "step"]
    # BCE over 4 classes starts near ln 2 per class; cross-entropy would start near ln 4 = 1.39
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses) and abs(losses[0] - math.log(2)) < 0.15


BAD = {
    "bce with smoothing": (("loss.name=bce",), "set data.smoothing=0"),
    "3-Augment with RandAugment": (("data.three_augment=true",), "set data.auto_augment=none and data.reprob=0"),
    "jitter under RandAugment": (("data.color_jitter=0.3",), "data.auto_augment=none or data.color_jitter=0"),
    "unknown optimizer": (("optim.name=lars",), "adamw, lamb, sgd"),
}


def _one_line(rc: int, err: str, words: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("deit train: error: ") and words in lines[0], lines[0]


def test_settings_that_do_not_go_together_are_one_line(capsys):
    for overrides, words in BAD.values():  # through the CLI's entry point: a process start costs seconds
        rc = main(["train", "--config", "cifar10-deit", "--dry-run", *overrides])
        _one_line(rc, capsys.readouterr().err, words)
    overrides, words = BAD["bce with smoothing"]  # and once as typed
    result = _deit("train", "--config", "cifar10-deit", "--dry-run", *overrides)
    _one_line(result.returncode, result.stderr, words)
