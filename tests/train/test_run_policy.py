"""What `deit train` does with an output dir that holds a run (resume: auto | never, --fresh, --resume), the
checkpoint cadence by time, TensorBoard event files, and the once-per-epoch summary of unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_support import tiny_overrides

from deit.cli import main
from deit.train import load_config, train
from deit.train.resume import config_differences


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--config", "digits-convnet-teacher", *tiny_overrides(out, extra=("epochs=1", *extra))])


def test_a_changed_config_is_refused_naming_the_keys_and_fresh_keeps_the_old_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    first = load_file(str(out / "last.safetensors"))
    capsys.readouterr()
    assert _train(out, "optim.lr=5e-3", "seed=4") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert "optim.lr: 0.002 -> 0.005" in err and "seed: 3 -> 4" in err and "--fresh" in err
    assert all(torch.equal(first[k], v) for k, v in load_file(str(out / "last.safetensors")).items())  # untouched

    assert main(["train", "--fresh", "--config", "digits-convnet-teacher",
                 *tiny_overrides(out, extra=("epochs=1", "optim.lr=5e-3", "seed=4"))]) == 0
    assert "was moved to" in capsys.readouterr().out
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.prev-")]
    assert len(moved) == 1 and (moved[0] / "state.pt").is_file()  # the old run, kept whole
    assert all(torch.equal(first[k], v) for k, v in load_file(str(moved[0] / "last.safetensors")).items())
    assert load_config(out / "config.yaml").optim.lr == 5e-3


def test_settings_that_do_not_change_the_run_may_differ():
    saved = {"epochs": 3, "progress": True, "log_every": 10, "data": {"num_workers": 4, "batch_size": 8}}
    now = {"epochs": 3, "progress": False, "log_every": 1, "data": {"num_workers": 0, "batch_size": 8}}
    assert config_differences(saved, now) == []
    assert config_differences(saved, {**now, "epochs": 4}) == ["epochs: 3 -> 4"]


def test_resume_requires_a_saved_state(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--config", "digits-convnet-teacher"]) == 2
    assert "drop --config" in capsys.readouterr().err


def test_save_every_minutes_saves_inside_the_epoch(tmp_path):
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "run", extra=(
        "epochs=1", "save_every_minutes=0.000001", "logging.tensorboard=false")))
    saves = []
    from deit.train import hooks

    original = hooks.Checkpointer.save

    def counting(self, trainer, metrics=None):
        saves.append(trainer.progress.step)
        original(self, trainer, metrics)

    hooks.Checkpointer.save = counting
    try:
        train(cfg)
    finally:
        hooks.Checkpointer.save = original
    steps_per_epoch = 96 // 8
    assert saves == list(range(1, steps_per_epoch + 1))  # every step boundary (all due), then the epoch's end


@pytest.mark.skipif(not __import__("importlib").util.find_spec("tensorboard"), reason="tensorboard not installed")
def test_tensorboard_event_files_beside_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert _train(out, "epochs=2", "logging.tensorboard=true") == 0
    events = list(out.glob("events.out.tfevents.*"))
    assert events and (out / "metrics.jsonl").is_file()
    acc = EventAccumulator(str(out))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/top1", "epoch/train_loss"} <= tags
    assert [e.step for e in acc.Scalars("epoch/top1")] == [12, 24]
    assert _train(tmp_path / "off", "logging.tensorboard=false") == 0
    assert not list((tmp_path / "off").glob("events.out.tfevents.*"))


def test_unreadable_images_are_summarised_once_per_epoch(tmp_path, capsys):
    root = tmp_path / "ds"
    for split, n in (("train", 8), ("val", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                color = (40 * i, 100, 0 if cls == "a" else 200)
                Image.new("RGB", (20, 20), color).save(root / split / cls / f"{i}.png")
    for i in range(4):
        (root / "train" / "a" / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-convnet-teacher",
                 *tiny_overrides(out, extra=("epochs=2", "data.dataset=imagefolder", f"data.root={root}",
                                             "data.num_workers=2", "data.repeated_aug=false"))]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "unreadable image" in line]
    assert len(lines) == 2 and lines[0].startswith("warning: epoch 1:") and lines[1].startswith("warning: epoch 2:")
    assert "broken" in lines[0] and f"deit data check {root}" in lines[0]
    epochs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines() if '"epoch"' in s]
    assert all(r["bad_images"] >= 1 for r in epochs if r["kind"] == "epoch")
