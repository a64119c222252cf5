"""The data path with and without ``data.device_augment`` on real photos: images/s per loader worker, and the device
stage's cost per image.

Run: python benchmarks/bench_device_augment.py [--tar PATH] [--images 1000] [--repeats 3] [--recipes deit,deit3]
[--json]

Reads ``imagenet-sample-jpeg.tar`` (1,000 ImageNet photos, one per class; default ``../shared/data/`` beside the
repository) and unpacks it under /tmp once. Each recipe (``RECIPES``: DeiT's, DeiT III's) at 224 px, both modes.

- Per worker: one process, one torch thread (a loader worker), the work a worker does for a batch: decode, its part
  of the recipe, collate. Worker path: decode, the whole transform, stacking float32 images. ``device_augment``:
  decode, the crop box and every random draw, packing the uint8 crop boxes. Wall-clock and CPU-time rates (they
  differ when other processes share the cores).
- Device stage: ``DeviceAugment`` on batches of ``--batch`` of the same photos, on this CPU with each of
  ``--threads``; ms per image, and the share of each step.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from deit.data import DataConfig
from deit.data.device_augment import DeviceAugment, DeviceAugmentWorker, split_transform
from deit.data.images import decode_image
from deit.data.transforms import build_transform
from deit.models.preprocessing import Preprocessing

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TAR = REPO.parent / "shared" / "data" / "imagenet-sample-jpeg.tar"
# name -> (what it is, its DataConfig settings)
RECIPES: dict[str, tuple[str, dict]] = {
    "deit": ("DeiT: RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, erasing 0.25", {}),
    "deit3": ("DeiT III (ImageNet-1k): RandomResizedCrop, flip, 3-Augment, colour jitter 0.3",
              dict(three_augment=True, color_jitter=0.3, auto_augment=None, reprob=0.0)),
    "deit3-simple": ("DeiT III with the simple random crop (the strip it reads resized on the device)",
                     dict(three_augment=True, color_jitter=0.3, auto_augment=None, reprob=0.0, train_crop="simple")),
}


def photos(tar: Path, count: int) -> list[Path]:
    root = Path("/tmp") / "deit-imagenet-sample"
    if not (root / "imagenet-sample").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as archive:
            archive.extractall(root, filter="data")
    return sorted((root / "imagenet-sample").glob("*.JPEG"))[:count]


def per_worker(paths: list[Path], transform, collate, batch: int, seed: int) -> dict:
    """One worker's rate over ``paths``: decode + ``transform`` per image, ``collate`` per batch."""
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(paths), batch):
        collate([transform(decode_image(p), np.random.default_rng([seed, 0, start + i]))
                 for i, p in enumerate(paths[start:start + batch])])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"images_per_s": len(paths) / wall, "cpu_images_per_s": len(paths) / cpu}


def device_stage(paths: list[Path], worker: DeviceAugmentWorker, stage: DeviceAugment, batch: int,
                 threads: int) -> dict:
    """ms per image of the device stage on this CPU, whole and per step."""
    images = [decode_image(p) for p in paths[:batch]]
    batches = [worker.collate([worker(img, np.random.default_rng([r, 0, i])) for i, img in enumerate(images)])
               for r in range(2)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stage(batches[0])  # warm-up
        steps = {s.name: 0.0 for s in stage.steps}
        t0 = time.perf_counter()
        for b in batches:
            x = b.images
            for s in stage.steps:
                t = time.perf_counter()
                x = s.apply(x, b.params[s.name])
                steps[s.name] += time.perf_counter() - t
        total = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    n = batch * len(batches)
    return {"threads": threads, "ms_per_image": 1000 * total / n,
            "ms_per_image_by_step": {k: 1000 * v / n for k, v in steps.items()}}


def sent_bytes(paths: list[Path], worker: DeviceAugmentWorker, batch: int) -> float:
    """Mean bytes per image of a device_augment batch (pixels and parameters)."""
    b = worker.collate([worker(decode_image(p), np.random.default_rng([0, 0, i]))
                        for i, p in enumerate(paths[:batch])])
    total = b.images.numel()
    stack = [b.params]
    while stack:
        v = stack.pop()
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
    return total / batch


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                 platform.processor())
    return {"cpu": model, "avx512_bf16": "avx512_bf16" in lscpu, "cores": torch.get_num_threads(),
            "torch": torch.__version__, "uptime": subprocess.run(["uptime"], capture_output=True,
                                                                  text=True).stdout.strip()}


def measure(paths: list[Path], cfg: DataConfig, args: argparse.Namespace) -> dict:
    """One recipe: per-worker rates of both modes (``--repeats`` runs, alternating), bytes sent, the device stage."""
    pre = Preprocessing(input_size=224)
    worker_path = build_transform(cfg, True, pre)
    worker = DeviceAugmentWorker.build(cfg, pre)
    stage = DeviceAugment(split_transform(build_transform(cfg, True, pre))[1])
    report: dict = {"runs": []}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loader worker runs with one thread
    try:
        per_worker(paths[:50], worker_path, default_collate, args.batch, 99)  # warm-up: page cache, imports
        for r in range(args.repeats):
            report["runs"].append({
                "worker_path": per_worker(paths, worker_path, default_collate, args.batch, r),
                "device_augment": per_worker(paths, worker, worker.collate, args.batch, r)})
    finally:
        torch.set_num_threads(threads)
    report["bytes_per_image"] = {"worker_path": 3 * 224 * 224 * 4, "device_augment": sent_bytes(paths, worker,
                                                                                                 args.batch)}
    report["device_stage"] = [device_stage(paths, worker, stage, args.batch, int(t))
                              for t in args.threads.split(",") for _ in range(args.repeats)]
    return report


def show(name: str, report: dict) -> None:
    print(f"recipe {name}: {RECIPES[name][0]}; images/s per worker (wall / CPU time):")
    for i, run in enumerate(report["runs"], 1):
        a, b = run["worker_path"], run["device_augment"]
        print(f"  run {i}: worker path {a['images_per_s']:.0f} / {a['cpu_images_per_s']:.0f}, device_augment "
              f"{b['images_per_s']:.0f} / {b['cpu_images_per_s']:.0f}: x{b['images_per_s'] / a['images_per_s']:.2f}"
              f" / x{b['cpu_images_per_s'] / a['cpu_images_per_s']:.2f}")
    sent = report["bytes_per_image"]
    print(f"  bytes per image sent: worker path {sent['worker_path']}, device_augment {sent['device_augment']:.0f}")
    for d in report["device_stage"]:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in d["ms_per_image_by_step"].items())
        print(f"  device stage on this CPU, {d['threads']} thread(s): {d['ms_per_image']:.2f} ms/image ({parts})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tar", type=Path, default=DEFAULT_TAR)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", default="1,2", help="device-stage thread counts (default 1,2)")
    p.add_argument("--recipes", default="deit,deit3", help=f"comma-separated, of {', '.join(RECIPES)}")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not args.tar.is_file():
        raise SystemExit(f"no photo archive at {args.tar}: pass --tar PATH to imagenet-sample-jpeg.tar")
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe {unknown[0]!r}: --recipes takes {', '.join(RECIPES)}")
    paths = photos(args.tar, args.images)
    report = {"machine": machine(), "images": len(paths), "batch": args.batch,
              "recipes": {n: measure(paths, DataConfig(device_augment=True, **RECIPES[n][1]), args) for n in names}}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    m = report["machine"]
    print(f"{m['cpu']} (avx512_bf16: {m['avx512_bf16']}), torch {m['torch']}; {m['uptime']}")
    print(f"{len(paths)} photos, batch {args.batch}")
    for name, r in report["recipes"].items():
        show(name, r)


if __name__ == "__main__":
    main()
