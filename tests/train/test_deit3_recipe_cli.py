"""The DeiT III recipe (LAMB, BCE, 3-Augment, colour jitter, the simple crop) from the command line, as a user types
it: a run that trains on it, and the settings that cannot go together refused in one line."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
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


RAND = "rand-m5-mstd0.5-inc1"  # the presets' short-schedule recipe has none: each case sets the RandAugment it needs
BAD = {
    "bce with smoothing": (("loss.name=bce",), "set data.smoothing=0"),
    "3-Augment with RandAugment": (("data.three_augment=true", f"data.auto_augment={RAND}"),
                                   "set data.auto_augment=none and data.reprob=0"),
    "jitter under RandAugment": (("data.color_jitter=0.3", f"data.auto_augment={RAND}"),
                                 "data.auto_augment=none or data.color_jitter=0"),
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


def test_the_recipe_model_settings_flow_from_the_config(tmp_path):
    """Evaluation at crop 1.0 and the uniform drop path are config values: a run's student and eval transform
    get them (with LayerScale and the patch-only pos_embed of DeiT III)."""
    from deit.data import build_transform
    from deit.train import load_config
    from deit.train.components import build_student

    args = "model.args={patch_size: 4, embed_dim: 32, depth: 3, num_heads: 2, init_values: 1e-4, " \
           "prefix_pos_embed: false, drop_path_schedule: uniform}"
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path, distilled=False, extra=(args, *RECIPE)))
    model = build_student(cfg, 4)
    assert [b.drop_path1.drop_prob for b in model.blocks] == [0.1] * 3  # model.drop_path in every block
    assert [b.drop_path2.drop_prob for b in model.blocks] == [0.1] * 3
    assert float(model.blocks[0].ls1.gamma.detach().mean()) == pytest.approx(1e-4)
    assert model.pos_embed.shape[1] == (16 // 4) ** 2  # patches only
    assert model.preprocessing.crop_pct == 1.0 and model.preprocessing.resize_size == 16
    eval_first = build_transform(cfg.data, False, model.preprocessing).transforms[0]
    assert eval_first.size == 16  # no resize beyond the crop: the whole image is seen
