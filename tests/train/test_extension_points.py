"""Where new work enters, used as a user outside the package would: only the public API (``deit``, ``deit.train``,
``deit.data``), and a run that trains, evaluates and resumes with what it added."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest
import torch
from torch import nn
from train_support import tiny_overrides

import deit
from deit.train import load_config, objective_names, register_objective, train
from deit.train.preemption import Preempted


class SquaredHinge(nn.Module):
    """A user's objective: squared hinge on the true class's margin (accepts class indices or soft targets)."""

    calls = 0

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        SquaredHinge.calls += 1
        if target.ndim == 1:
            target = nn.functional.one_hot(target, self.num_classes).float()
        signs = 2 * target - 1
        return torch.clamp(1 - signs * logits.float(), min=0).pow(2).mean()


@pytest.fixture(scope="module", autouse=True)
def _registered():
    if "squared_hinge" not in objective_names():
        register_objective("squared_hinge", lambda spec: SquaredHinge(spec.num_classes))


def _run(out, *extra):
    return train(load_config("digits-convnet-teacher", tiny_overrides(out, extra=("loss.name=squared_hinge",
                                                                                      *extra))))


def test_a_new_objective_trains_evaluates_and_resumes(tmp_path):
    SquaredHinge.calls = 0
    full = _run(tmp_path / "full", "epochs=2")
    assert SquaredHinge.calls > 0  # the run trained on it (both heads of the distilled student, no teacher)
    assert {"top1", "top1_cls", "top1_dist"} <= set(full.summary["final"])
    # It changes training: the same run on the built-in objective ends elsewhere.
    base = train(load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "ce", extra=("epochs=2",))))
    assert not all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(),
                                                       base.model.state_dict().values(), strict=True))
    # Evaluated from its checkpoint through the public loader: the run's own final figure.
    model = deit.load_checkpoint(full.run_dir / "last.safetensors")
    assert model.num_classes == 4
    # Preempted mid-run (SIGUSR1: it saves and stops), then the same call continues it to the uninterrupted
    # run's weights, bit for bit.
    with pytest.raises(Preempted), _signal_when_logged(tmp_path / "resumed", step=15):
        _run(tmp_path / "resumed", "epochs=2")
    resumed = _run(tmp_path / "resumed", "epochs=2")
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


@contextlib.contextmanager
def _signal_when_logged(run_dir, step: int):
    """SIGUSR1 to this process once the run in ``run_dir`` has logged ``step``."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() \
                else []
            if any(json.loads(line).get("step", 0) >= step for line in lines if line.endswith("}")):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_an_unknown_objective_is_refused_naming_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match="cross_entropy.*register_objective"):
        load_config("digits-convnet-teacher", tiny_overrides(tmp_path, extra=("loss.name=focal",)))
    with pytest.raises(ValueError, match="registered already"):
        register_objective("cross_entropy", lambda spec: nn.CrossEntropyLoss())
