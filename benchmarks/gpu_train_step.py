"""One DeiT training step on the device, as a run takes it, with and without ``data.device_augment`` and compile.

Run: python benchmarks/gpu_train_step.py [--device cuda] [--batch 256] [--recipe deit|deit3]
[--variants worker,device,...] [--json]

A variant's step is the training task's (``deit.train.task.TrainTask``: the batch moved to the device, the device
stage under ``device_augment``, mixup/cutmix, the student's forward in the amp dtype, hard distillation against a
teacher's fixed outputs (the teacher's own cost left out), backward) and an AdamW step. Its input is one loader
batch of the recipe (``--recipe``: DeiT's RandAugment and erasing, or DeiT III's 3-Augment and colour jitter) at
224 px, built on the host from photo-like images of 300-500 px and pinned: float32 for the worker path, the uint8
crop boxes and drawn parameters for ``device_augment``. Reported per variant: images/s, ms per step, the student's
MFU against the datasheet peak (3x the forward FLOPs; accelerators only), and the device stage alone in ms per
image. ``+compile`` is the run's ``compile: true`` (``TrainTask(compile=True)``: forward + objective compiled, and
their backward, after its eager steps; the warm-up covers them and the first compiled step).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate

from deit.benchmark.common import device_name, forward_gflop, mfu_pct
from deit.data import DataConfig, build_device_augment, build_mixup
from deit.data.device_augment import DeviceAugmentWorker
from deit.data.transforms import build_transform
from deit.models import build_architecture
from deit.runtime.distributed import DistEnv
from deit.train.compiling import EAGER_STEPS, TIMED_STEPS
from deit.train.config import OptimConfig
from deit.train.loss import DistillationObjective
from deit.train.objectives import ObjectiveSpec, build_objective
from deit.train.optim import build_optimizer
from deit.train.task import TrainTask

VARIANTS = ("worker", "device", "worker+compile", "device+compile")
AMP = {"bf16": "bf16", "fp32": "none"}
RECIPES = {"deit": {}, "deit3": dict(three_augment=True, color_jitter=0.3, auto_augment=None, reprob=0.0)}


class FixedTeacher:
    """A teacher source that answers every batch with the same logits (the teacher's cost is not measured)."""

    def __init__(self, logits: torch.Tensor):
        self.fixed = logits

    def logits(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        return self.fixed


def photos(count: int, sides: tuple[int, int] = (300, 500), seed: int = 0) -> list[Image.Image]:
    """Photo-like images (smooth colour fields with noise), sides drawn in ``sides``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        field = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        noisy = np.asarray(field, dtype=np.float32) + rng.normal(0, 12, (h, w, 3))
        out.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return out


def host_batches(cfg: DataConfig, pre, images: list[Image.Image], batch: int, pin: bool) -> dict:
    """One loader batch per mode, as the workers would send it: {"worker": float32, "device": DeviceBatch}."""
    picks = [images[i % len(images)] for i in range(batch)]
    rngs = [np.random.default_rng([0, 0, i]) for i in range(batch)]
    transform = build_transform(cfg, True, pre)
    worker = DeviceAugmentWorker.build(cfg, pre)
    floats = default_collate([transform(img, rng) for img, rng in zip(picks, rngs, strict=True)])
    rngs = [np.random.default_rng([0, 0, i]) for i in range(batch)]
    device = worker.collate([worker(img, rng) for img, rng in zip(picks, rngs, strict=True)])
    return {"worker": floats.pin_memory() if pin else floats, "device": device.pin_memory() if pin else device}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variant: str, args: argparse.Namespace, batches: dict, device: torch.device) -> dict:
    """Time ``args.steps`` training steps of one variant after ``args.warmup``."""
    mode, compiled = variant.split("+")[0], variant.endswith("+compile")
    cfg = DataConfig(device_augment=mode == "device", **RECIPES[args.recipe])
    torch.manual_seed(0)
    model = build_architecture(args.model, img_size=args.img_size, **json.loads(args.model_args)).to(device)
    pre, classes = model.preprocessing, model.num_classes
    objective = DistillationObjective(build_objective("cross_entropy", ObjectiveSpec(classes, 0.1, True)), "hard")
    teacher = FixedTeacher(torch.randn(args.batch, classes, device=device))
    task = TrainTask(model, objective, teacher, mixup=build_mixup(cfg, classes), seed=0,
                     augment=build_device_augment(cfg, pre), env=DistEnv(device=device), amp=AMP[args.dtype],
                     compile=compiled)
    # compiled: past the eager steps, the compile and the steps the compiled step synchronises to measure itself
    warmup = max(args.warmup, EAGER_STEPS + 1 + TIMED_STEPS) if compiled else args.warmup
    optimizer = build_optimizer(OptimConfig(), model, lr=5e-4)
    labels = torch.randint(0, classes, (args.batch,))
    x = batches[mode]

    def step(i: int) -> None:
        with task.timing():  # as the trainer steps (the compiled step measures its first steps)
            out = task(x, labels, 0, i)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(warmup + i)
    _sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    row = {"variant": variant, "batch": args.batch, "ms_per_step": 1000 * seconds,
           "images_per_s": args.batch / seconds}
    overrides = {"img_size": args.img_size, **json.loads(args.model_args)} if args.img_size else json.loads(
        args.model_args)
    gflops = row["images_per_s"] * 3 * forward_gflop(args.model, pre.input_size, overrides)
    row["mfu_pct"] = mfu_pct(gflops, device, args.dtype)
    if mode == "device":
        moved = x.to(device, non_blocking=True)
        task.augment(moved)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            task.augment(moved)
        _sync(device)
        row["device_stage_ms_per_image"] = 1000 * (time.perf_counter() - t0) / args.steps / args.batch
    return row


def run(args: argparse.Namespace) -> dict:
    """Every variant's row; with ``args.output``, the report so far is written there after each variant (a run
    stopped at its time limit keeps what it measured)."""
    device = torch.device(args.device)
    pre_model = build_architecture(args.model, img_size=args.img_size, **json.loads(args.model_args))
    sides = tuple(int(v) for v in args.sides.split(","))
    batches = host_batches(DataConfig(**RECIPES[args.recipe]), pre_model.preprocessing, photos(args.photos, sides),
                           args.batch, pin=device.type == "cuda")
    report = {"device": device_name(device), "model": args.model, "dtype": args.dtype, "recipe": args.recipe,
              "torch": torch.__version__, "rows": []}
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        report["rows"].append(measure(variant, args, batches, device))
        if args.output:
            Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="deit_small_distilled_patch16_224")
    p.add_argument("--model-args", default="{}", help="JSON overrides of the architecture (tests: a tiny one)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", choices=sorted(AMP), default="bf16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--photos", type=int, default=64, help="distinct images the batch is drawn from")
    p.add_argument("--sides", default="300,500", help="smallest,largest side of those images (default 300,500)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="deit")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", action="store_true")
    p.add_argument("--output", default=None, help="also write the report (JSON) here, after each variant")
    return p


def main() -> None:
    args = parser().parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{report['model']} on {report['device']}, {report['dtype']}, recipe {report['recipe']}, "
          f"torch {report['torch']}")
    for r in report["rows"]:
        mfu = f", MFU {r['mfu_pct']:.1f}%" if r["mfu_pct"] is not None else ""
        stage = (f", device stage {r['device_stage_ms_per_image']:.4f} ms/image"
                 if "device_stage_ms_per_image" in r else "")
        print(f"  {r['variant']:>15}: {r['images_per_s']:.0f} img/s ({r['ms_per_step']:.1f} ms/step){mfu}{stage}")


if __name__ == "__main__":
    main()
