"""Throughput of the train pipeline in one process (= one loader worker): JPEG decode + the full DeiT transform.

``benchmark_augmentation()`` writes its own JPEGs (sides drawn in [256, 500] px, photo-like smooth content with
noise, quality 90) to a temporary folder and times decode -> RandomResizedCrop -> flip -> RandAugment ->
normalise -> RandomErasing at ``img_size`` px, single-threaded, after a warm-up pass. Reports wall-clock and
CPU-time rates (they differ when other processes share the cores). Images/s per worker multiplies by the number
of loader workers as long as there are cores for them.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def write_jpegs(folder: str, count: int, min_side: int = 256, max_side: int = 500, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"img_{i:04d}.jpg")
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def benchmark_augmentation(num_images: int = 200, img_size: int = 224, repeats: int = 2, seed: int = 0,
                           cfg=None) -> dict:
    """Time the train pipeline; returns images/s per worker for decode+augment and for decode alone."""
    from deit.data.config import DataConfig
    from deit.data.images import decode_image
    from deit.data.transforms import build_transform
    from deit.models.preprocessing import Preprocessing

    cfg = cfg or DataConfig()
    transform = build_transform(cfg, True, Preprocessing(input_size=img_size))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loader worker runs with one thread
    try:
        with tempfile.TemporaryDirectory(prefix="deit-bench-") as tmp:
            paths = write_jpegs(tmp, num_images, seed=seed)
            for p in paths[: min(20, num_images)]:  # warm-up: page cache, lazy imports
                transform(decode_image(p), np.random.default_rng(0))
            t0 = time.perf_counter()
            for p in paths:
                decode_image(p)
            decode_s = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            n = 0
            for r in range(repeats):
                for i, p in enumerate(paths):
                    x = transform(decode_image(p), np.random.default_rng([seed, r, i]))
                    n += 1
            total_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(threads)
    assert x.shape == (3, img_size, img_size)
    return {
        "images_per_s_per_worker": n / total_s,
        # CPU time rate: what one worker reaches with a core to itself (robust to other load on the machine)
        "cpu_images_per_s_per_worker": n / cpu_s,
        "decode_only_images_per_s": num_images / decode_s,
        "ms_per_image": 1000 * total_s / n,
        "images": n,
        "img_size": img_size,
        "source_sides": [256, 500],
        "auto_augment": cfg.auto_augment,
        "reprob": cfg.reprob,
    }
