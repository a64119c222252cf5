"""``run_benchmark``: every requested task in turn, returning the run's header (device, versions) and its rows."""

from __future__ import annotations

import datetime
import platform
import sys
from collections.abc import Callable
from dataclasses import replace

import torch

from deit.benchmark.common import BenchmarkConfig, device_name, resolve_device, threads
from deit.benchmark.gemm import bf16_supported, default_size, gemm
from deit.benchmark.inference import bench_inference
from deit.benchmark.peers import transformers_version
from deit.benchmark.report import Row
from deit.benchmark.timing import race
from deit.benchmark.training import bench_training
from deit.models.attention import describe_choices
from deit.runtime.allocator import allocator_setting


def quick_config(config: BenchmarkConfig) -> BenchmarkConfig:
    """``--quick``: the first model and batch size only, 3 rounds, a training batch of at most 32, 40 images for
    the data pipeline, and no teacher-in-the-loop row: about a minute on 2 idle CPU cores."""
    return replace(
        config,
        models=config.models[:1],
        train_models=config.train_models[:1],
        batch_sizes=config.batch_sizes[:1],
        train_batch_size=min(config.train_batch_size, 32),
        repeats=min(config.repeats, 3),
        train_repeats=min(config.train_repeats, 2),
        data_images=min(config.data_images, 40),
        tasks=tuple(t for t in config.tasks if t not in ("train+teacher", "train+cache")),
    )


def bench_gemm(config: BenchmarkConfig, device: torch.device) -> list[Row]:
    """The reference GEMM alone, fp32 and (where the hardware has it) bf16."""
    n = config.gemm_size or default_size(device)
    dtypes = ["fp32"] + (["bf16"] if bf16_supported(device) else [])
    fns = {dt: gemm(device, dt, n) for dt in dtypes}
    samples = race({dt: fn for dt, (fn, _) in fns.items()}, device, config.repeats, config.warmup)
    return [
        Row(task="gemm", model=f"matmul {n}x{n}", batch=None, dtype=dt, device=device.type,
            gemm_gflops=flop / samples[dt].median / 1e9, ours_spread_pct=samples[dt].spread_pct)
        for dt, (_, flop) in fns.items()
    ]


def bench_data(config: BenchmarkConfig) -> Row:
    """Decode + the full DeiT train augmentation, images/s for one loader worker (one thread)."""
    from deit.data import benchmark_augmentation

    result = benchmark_augmentation(num_images=config.data_images, img_size=config.img_size or 224,
                                    repeats=1 if config.data_images < 100 else 2)
    return Row(task="data", model="train pipeline", batch=None, dtype="fp32", device="cpu",
               ours_img_s=result["images_per_s_per_worker"], ours_latency_ms=result["ms_per_image"],
               note=f"per loader worker: decode + RandomResizedCrop + flip + RandAugment ({result['auto_augment']}) "
                    f"+ normalise + RandomErasing (p={result['reprob']}); decode alone "
                    f"{result['decode_only_images_per_s']:.0f} img/s")


def run_benchmark(config: BenchmarkConfig, progress: Callable[[str], None] | None = None) -> tuple[dict, list[Row]]:
    """Run ``config``'s tasks; ``progress`` is told what starts (the CLI prints it to stderr)."""
    say = progress or (lambda message: None)
    device = resolve_device(config)
    peer = config.peer and transformers_version() is not None
    rows: list[Row] = []
    with threads(config.threads if device.type == "cpu" else None):
        header = {
            "device": device_name(device),
            "torch": torch.__version__,
            "transformers": transformers_version() or "not installed (no peer)",
            "python": platform.python_version(),
            "date": datetime.date.today().isoformat(),
            "threads": torch.get_num_threads(),
            "malloc": allocator_setting(),  # every contender runs in this process, under the same allocator
            "command": " ".join(["deit", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("deit") else None,
        }
        if "gemm" in config.tasks:
            say("gemm")
            rows += bench_gemm(config, device)
        if "inference" in config.tasks:
            for name in config.models:
                for batch in config.batch_sizes:
                    say(f"inference {name} batch {batch}")
                    rows.append(bench_inference(name, batch, config, device, peer))
        for task in ("train", "train+teacher", "train+cache"):
            if task in config.tasks:
                for name in config.train_models:
                    say(f"{task} {name} batch {config.train_batch_size}")
                    rows.append(bench_training(name, config, device, peer, task))
        if "data" in config.tasks:
            say("data")
            rows.append(bench_data(config))
        header["attention"] = f"{config.attn_impl}; chosen: {describe_choices()}"
    return header, rows


__all__ = ["bench_data", "bench_gemm", "quick_config", "run_benchmark"]
