"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.checkpoints import save_checkpoint
from deit.models import build_architecture


def _teacher(path: Path) -> Path:
    torch.manual_seed(1)
    teacher = build_architecture("resnet_digits", num_classes=4, img_size=16)
    save_checkpoint(teacher, path)
    return path


def _overrides(out: Path, teacher: Path) -> list[str]:
    # Everything that draws random numbers or carries state is on: mixup/cutmix, crops, flips, erasing, repeated
    # augmentation, stochastic depth, EMA, gradient accumulation, hard distillation from a teacher.
    return tiny_overrides(out, extra=(
        "epochs=4", "save_every=2", "optim.accum_steps=2", "ema.enabled=true", "ema.decay=0.9",
        "distillation.type=hard", f"teacher.checkpoint={teacher}",
    ))


def _steps_logged(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(s).get("step", 0) for s in lines if s.endswith("}")]
    return max(steps, default=0)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _epochs(run_dir: Path) -> list[dict]:
    records = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records if r["kind"] == "epoch"]


def test_sigkill_then_resume_is_bit_exact(tmp_path):
    teacher = _teacher(tmp_path / "teacher.safetensors")
    base_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    train = [*DEIT, "train", "--config", "digits-convnet-teacher"]
    popen = dict(cwd=REPO, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = subprocess.Popen([*train, *_overrides(base_dir, teacher)], **popen)
    victim = subprocess.Popen([*train, *_overrides(killed_dir, teacher)], **popen)
    # Kill once it has logged step 5: states were saved at steps 2 and 4, so the kill lands between two saves.
    deadline = time.monotonic() + 120
    while _steps_logged(killed_dir) < 5:
        assert victim.poll() is None, f"run ended before it could be killed:\n{victim.communicate()[0]}"
        assert time.monotonic() < deadline, "the run never reached step 5"
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "summary.json").exists()
    state_step = torch.load(killed_dir / "state.pt", weights_only=False)["progress"]["step"]
    assert 2 <= state_step < 24

    resumed = subprocess.run([*DEIT, "train", "--resume", str(killed_dir)], **{**popen, "stdout": subprocess.PIPE},
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout
    assert "resuming at epoch" in resumed.stdout
    out, _ = base.communicate(timeout=300)
    assert base.returncode == 0, out

    for name in ("last.safetensors", "ema.safetensors", "best.safetensors"):
        a, b = _weights(base_dir / name), _weights(killed_dir / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    assert _epochs(base_dir) == _epochs(killed_dir)  # same metrics, bit for bit, and no duplicated lines
    steps = [json.loads(s)["step"] for s in (killed_dir / "metrics.jsonl").read_text().splitlines()
             if '"kind": "step"' in s]
    assert steps == sorted(set(steps)) == list(range(1, 25))
    summary = json.loads((killed_dir / "summary.json").read_text())
    assert summary["steps"] == 24


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    from deit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--config", "digits-convnet-teacher", *tiny_overrides(out, extra=("epochs=1",))]) == 0
    before = _weights(out / "last.safetensors")
    assert main(["train", "--resume", str(out)]) == 0
    after = _weights(out / "last.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The same command again (resume=auto) finds the finished run and changes nothing either.
    assert main(["train", "--config", "digits-convnet-teacher", *tiny_overrides(out, extra=("epochs=1",))]) == 0
    assert all(torch.equal(before[k], v) for k, v in _weights(out / "last.safetensors").items())
