"""Training with ``data.device_augment``: the same run as the worker path's (its batches are the worker path's, bit
for bit, so the weights are too), resumed bit-exactly after a preemption, and a teacher-output cache that keys it
as another stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import signal_when_logged, tiny_overrides

from deit.train import load_config, train
from deit.train.cache_build import BuildOptions, build_cache
from deit.train.preemption import Preempted


def _cfg(out: Path, teacher: Path, *extra: str):
    # The whole recipe on: RandAugment too (the tiny preset turns it off), hard distillation from a live teacher.
    return load_config("digits-convnet-teacher", tiny_overrides(out, extra=(
        "distillation.type=hard", f"teacher.checkpoint={teacher}", "data.auto_augment=rand-m9-mstd0.5-inc1-p0.8",
        "data.reprob=0.5", "data.synthetic_train=48", *extra)))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory, teacher) -> dict[str, torch.Tensor]:
    return _weights(train(_cfg(tmp_path_factory.mktemp("worker"), teacher)).run_dir)


def test_a_device_augment_run_is_the_worker_path_run_and_resumes_bit_exactly(tmp_path, teacher, worker_run, capsys):
    device = train(_cfg(tmp_path / "device", teacher, "data.device_augment=true"))
    assert "device_augment: true" in (device.run_dir / "config.yaml").read_text()
    assert "data.device_augment on a CPU" in capsys.readouterr().out  # said once, at the start
    assert _same(_weights(device.run_dir), worker_run)
    with pytest.raises(Preempted), signal_when_logged(tmp_path / "resumed", step=8):
        train(_cfg(tmp_path / "resumed", teacher, "data.device_augment=true", "data.num_workers=2"))
    resumed = train(_cfg(tmp_path / "resumed", teacher, "data.device_augment=true"))
    assert _same(_weights(resumed.run_dir), worker_run)


def test_the_teacher_cache_keys_device_augment_as_another_stream(tmp_path, teacher, worker_run):
    cache = tmp_path / "cache"
    build_cache(_cfg(tmp_path / "unused", teacher, "data.device_augment=true"), cache, BuildOptions(progress=False))
    uses = f"distillation.teacher_cache={cache}"
    with pytest.raises(ValueError, match=r"another data stream \(data.device_augment"):
        train(_cfg(tmp_path / "worker", teacher, uses))
    # the teacher saw the device stage's batches: the cached run is the live-teacher run
    run = train(_cfg(tmp_path / "device", teacher, uses, "data.device_augment=true", "teacher.checkpoint=null"))
    assert _same(_weights(run.run_dir), worker_run)
