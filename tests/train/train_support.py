"""Helpers for the training tests: tiny models and configs that train in milliseconds per step."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

# Subprocesses (resume, DDP) use one thread each, so their results match and they do not oversubscribe the CPU.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DEIT = [sys.executable, "-m", "deit"]
REPO = Path(__file__).resolve().parents[2]


def tiny_overrides(out: Path, *, distilled: bool = True, extra: tuple[str, ...] = ()) -> list[str]:
    """A tiny DeiT on the synthetic data set (16 px, 4 classes): ~10 ms per step on one thread."""
    return [
        f"output_dir={out}",
        "epochs=2",
        "seed=3",
        # fp32 on every machine: amp=auto and teacher.dtype=auto would pick bf16 on a CPU with AVX512_BF16 (or
        # under DEIT_ASSUME_BF16=1) and fp32 on one without.
        "amp=none",
        "teacher.dtype=float32",
        "progress=false",
        "log_every=1",
        "model.name=deit_tiny_distilled_patch16_224" if distilled else "model.name=deit_tiny_patch16_224",
        "model.img_size=16",
        "model.drop_path=0.1",
        "model.args={patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}",
        "model.preprocessing={crop_pct: 1.0}",
        "data.dataset=synthetic",
        "data.img_size=16",
        "data.synthetic_classes=4",
        "data.synthetic_train=96",
        "data.synthetic_val=40",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.auto_augment=null",
        "data.hflip=0.5",
        "data.scale=[0.5, 1.0]",
        "data.reprob=0.25",
        "data.mixup=0.8",
        "data.cutmix=1.0",
        "data.repeated_aug=true",
        "optim.lr=2e-3",
        "optim.scale_lr=false",
        "schedule.warmup_epochs=0.5",
        "schedule.min_lr=1e-5",
        *extra,
    ]


@contextlib.contextmanager
def signal_when_logged(run_dir: Path, step: int):
    """SIGUSR1 to this process (the run saves and stops) once the run in ``run_dir`` has logged ``step``."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            log = run_dir / "metrics.jsonl"
            lines = log.read_text().splitlines() if log.exists() else []
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
