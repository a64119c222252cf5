"""Two CPU processes with gloo under torchrun: identical weights on both ranks, exact distributed evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from train_support import REPO, SUBPROCESS_ENV, tiny_overrides

from deit.checkpoints import load_checkpoint
from deit.data import build_dataset, build_loader
from deit.runtime.distributed import DistEnv
from deit.train.engine import evaluate
from deit.train.presets import load_config


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    out = tmp_path / "ddp"
    # 41 val images: the ranks get 21 and 20, so padding or duplication would show in the counts.
    overrides = tiny_overrides(out, extra=("data.synthetic_val=41", "ema.enabled=true", "ema.decay=0.9"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "deit", "train", "--config", "digits-convnet-teacher", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "world size 2 on cpu" in proc.stdout
    assert "effective batch 16" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["total_batch"] == 16
    assert summary["ranks_identical"] is True  # sha256 of every tensor, gathered from both ranks

    # The metrics the two ranks computed together equal a single-process evaluation of the saved weights.
    cfg = load_config("digits-convnet-teacher", overrides)
    model = load_checkpoint(out / "last.safetensors")
    loader = build_loader(cfg.data, "val", preprocessing=model.preprocessing, seed=cfg.seed,
                          dataset=build_dataset(cfg.data, "val"), distributed=False)
    single = evaluate(model, loader, DistEnv())
    final = summary["final"]
    assert single["num_samples"] == final["num_samples"] == 41
    for key in ("top1", "top5", "top1_cls", "top1_dist", "top5_cls", "top5_dist"):
        assert single[key] == final[key], key
    assert single["loss"] == pytest.approx(final["loss"], rel=1e-5)
    ema = load_checkpoint(out / "ema.safetensors")
    assert not all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), model.state_dict().values(),
                                                       strict=True))
