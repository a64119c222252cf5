"""What fault tolerance costs: seconds per full training-state save (the `save_every_minutes` cadence) for DeiT-S
and DeiT-B, and the time from a killed torchrun worker to the first training step of the restarted group.

Run: python benchmarks/bench_faults.py [--repeats 3] [--out DIR] [--restart-model deit_small_distilled_patch16_224]
The saves go to --out (default: a folder under runs/, i.e. the disk runs are written to).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from deit.models import build_architecture
from deit.runtime.distributed import DistEnv
from deit.train.checkpointing import RunDir
from deit.train.config import OptimConfig, ScheduleConfig
from deit.train.ema import ModelEma
from deit.train.engine import Clock, Trainer
from deit.train.hooks import Checkpointer
from deit.train.loss import DistillationObjective
from deit.train.optim import build_optimizer, build_schedule
from deit.train.task import TrainTask


def _trainer(name: str) -> Trainer:
    model = build_architecture(name, num_classes=1000)
    optimizer = build_optimizer(OptimConfig(), model, lr=1e-3)
    x = torch.randn(2, 3, 224, 224)
    loss = sum(o.float().mean() for o in model.forward_heads(x))
    loss.backward()
    optimizer.step()  # AdamW's moments now exist: the state is full size
    task = TrainTask(model, DistillationObjective(nn.CrossEntropyLoss()), env=DistEnv())
    return Trainer(task=task, optimizer=optimizer, schedule=build_schedule(ScheduleConfig(), 1e-3, 10, 10),
                   env=DistEnv(), ema=ModelEma(model, 0.99996))


def save_cost(name: str, out: Path, repeats: int) -> dict:
    trainer = _trainer(name)
    run = RunDir(out / name)
    run.create()
    saver = Checkpointer(run, DistEnv(), {"model": {"name": name}}, Clock(), num_batches=10)
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        saver.save(trainer)
        seconds.append(time.perf_counter() - t)
    sizes = {p.name: p.stat().st_size / 2**20 for p in run.root.iterdir() if p.is_file()}
    return {"model": name, "params_m": sum(p.numel() for p in trainer.model.parameters()) / 1e6,
            "save_seconds": seconds, "files_mb": {k: round(v, 1) for k, v in sizes.items()},
            "total_mb": round(sum(sizes.values()), 1)}


def _steps(metrics: Path) -> int:
    try:
        return max((json.loads(s).get("step", 0) for s in metrics.read_text().splitlines() if s.endswith("}")),
                   default=0)
    except FileNotFoundError:
        return 0


def restart_latency(model: str, out: Path) -> dict:
    """Kill rank 0 of a 2-process torchrun job after its 3rd step; seconds until the restarted group's 1st step."""
    run_dir = out / "restart"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts",
           "1", "-m", "deit", "train", "--config", "digits-convnet-teacher", f"output_dir={run_dir}", "epochs=1",
           f"model.name={model}", "model.img_size=224", "data.dataset=synthetic", "data.img_size=224",
           "data.synthetic_classes=10", "data.synthetic_train=96", "data.synthetic_val=16", "data.batch_size=8",
           "save_every=2", "log_every=1", "progress=false", "ema.enabled=true", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while _steps(run_dir / "metrics.jsonl") < 3:
        if proc.poll() is not None:
            raise RuntimeError("the job ended before step 3")
        time.sleep(0.02)
    saved = torch.load(run_dir / "state.pt", weights_only=False)["progress"]["step"]
    victim = next(int(c) for t in Path(f"/proc/{proc.pid}/task").iterdir() for c in (t / "children").read_text().split()
                  if b"RANK=0" in Path(f"/proc/{c}/environ").read_bytes().split(b"\0"))
    killed = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    logged = _steps(run_dir / "metrics.jsonl")
    # The restarted group truncates the metrics to the saved step, then logs step saved + 1 again.
    while True:
        records = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s.endswith("}")]
        resumed = [i for i, r in enumerate(records) if r.get("event") == "resume"]
        if resumed and any(r.get("kind") == "step" for r in records[resumed[-1]:]):
            break
        if proc.poll() is not None:
            raise RuntimeError("the job ended without a resumed step")
        time.sleep(0.02)
    first_step = time.perf_counter() - killed
    proc.wait(timeout=600)
    return {"model": model, "killed_after_step": logged, "resumed_from_step": saved,
            "seconds_kill_to_first_new_step": round(first_step, 1), "job_exit_code": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--models", nargs="+", default=["deit_small_distilled_patch16_224",
                                                        "deit_base_distilled_patch16_224"])
    parser.add_argument("--restart-model", default="deit_small_distilled_patch16_224")
    args = parser.parse_args()
    torch.set_num_threads(2)
    Path("runs").mkdir(exist_ok=True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_faults.", dir="runs"))
    results = {"saves": [save_cost(m, out, args.repeats) for m in args.models]}
    results["restart"] = restart_latency(args.restart_model, out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
