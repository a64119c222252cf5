"""The data pipeline at 32 px: the train loader's images/s per worker against the model's training images/s.

Run: python benchmarks/bench_cifar_loader.py --root DIR [--presets cifar10-deit cifar10-convnet-teacher]
     [--batches 60] [--runs RUN_DIR ...] [--json]

DIR is a CIFAR-10 JPEG folder (train/CLASS/*.jpg and test/CLASS/*.jpg). For each preset it builds the train loader
exactly as `deit train` does (the preset's augmentation: crop, flips, RandAugment, erasing), once in the main process
(one thread: what one worker does with a core to itself) and once with one worker process, and reads nothing but the
loader. `--runs` adds the training images/s each run logged (median of its `metrics.jsonl` step rows), so the two sit
side by side: the loader is not the bottleneck while one worker delivers more images/s than the model consumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from deit.data.datasets import build_dataset
from deit.data.loader import build_loader
from deit.models.resnet9 import cifar_preprocessing
from deit.train.presets import load_config


def loader_rate(preset: str, root: str, workers: int, batches: int) -> dict:
    cfg = load_config(preset, ["data.dataset=imagefolder", f"data.root={root}"])
    data = replace(cfg.data, num_workers=workers, persistent_workers=False, pin_memory=False)
    loader = build_loader(data, "train", preprocessing=cifar_preprocessing(data.img_size),
                          dataset=build_dataset(data, "train"), seed=0)
    loader.sampler.set_epoch(0)
    it = iter(loader)
    next(it)  # warm-up: worker start, page cache, lazy imports
    t0, c0 = time.perf_counter(), time.process_time()
    images = 0
    for _ in range(batches):
        x, *_ = next(it)
        images += x.shape[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    row = {"preset": preset, "workers": workers, "batch": data.batch_size, "images": images,
           "images_per_s": images / wall, "auto_augment": data.auto_augment, "reprob": data.reprob,
           "train_crop": data.train_crop}
    if workers == 0:
        row["cpu_images_per_s"] = images / cpu  # one core to itself
    return row


def training_rate(run_dir: str) -> dict:
    rates = [json.loads(line).get("img_per_s") for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    rates = [r for r in rates if r]
    return {"run": run_dir, "training_images_per_s": statistics.median(rates), "steps_logged": len(rates)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="CIFAR-10 JPEG folder (train/ and test/)")
    p.add_argument("--presets", nargs="+", default=["cifar10-deit", "cifar10-convnet-teacher"])
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--runs", nargs="*", default=[], help="run directories whose training images/s to show")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [loader_rate(preset, args.root, w, args.batches) for preset in args.presets for w in (0, 1)]
    runs = [training_rate(r) for r in args.runs]
    if args.json:
        print(json.dumps({"loader": rows, "training": runs}, indent=2))
        return
    for r in rows:
        where = "main process, 1 thread" if r["workers"] == 0 else "1 worker process"
        extra = f", {r['cpu_images_per_s']:.0f}/s by CPU time" if "cpu_images_per_s" in r else ""
        print(f"{r['preset']:<26} loader, {where:<22} {r['images_per_s']:7.0f} images/s{extra}"
              f"  ({r['train_crop']} crop, {r['auto_augment'] or 'no RandAugment'}, erasing p={r['reprob']})")
    for r in runs:
        print(f"{r['run']:<49} training {r['training_images_per_s']:7.0f} images/s (median of "
              f"{r['steps_logged']} logged steps)")


if __name__ == "__main__":
    main()
