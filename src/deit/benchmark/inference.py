"""Inference: images/s of our model and of HF's twin with the same weights, in the same alternating rounds."""

from __future__ import annotations

from collections.abc import Callable

import torch

from deit.benchmark.common import (
    BenchmarkConfig,
    autocast,
    build,
    compile_note,
    fill_figures,
    forward_gflop,
    input_size,
    maybe_compile,
    model_overrides,
)
from deit.benchmark.gemm import default_size, gemm
from deit.benchmark.peers import load_twins
from deit.benchmark.report import Row
from deit.benchmark.timing import race
from deit.models.fusion import cpu_inference_model

OURS, OURS_EAGER, GEMM = "ours", "ours-eager", "gemm"


def _call(fn: Callable[[torch.Tensor], object], x: torch.Tensor, dtype: str) -> Callable[[], None]:
    def call() -> None:
        with autocast(x.device, dtype):
            fn(x)

    return call


def bench_inference(name: str, batch: int, config: BenchmarkConfig, device: torch.device, peer: bool) -> Row:
    """Ours, HF's eager and sdpa twins, and the reference GEMM, under ``torch.inference_mode``. Ours on the CPU in
    fp32, uncompiled, is the model fused for CPU inference (``deit.models.fusion``), as evaluation and prediction
    run it. With ``--compile`` every contender's forward is compiled alike (``common.Compiled``) and our eager model
    (fused where it applies) runs in the same rounds."""
    model = build(name, config, device).eval()
    size = input_size(model)
    x = torch.randn(batch, 3, size, size, device=device, generator=torch.Generator(device=device).manual_seed(0))
    eager = cpu_inference_model(model) if device.type == "cpu" and config.dtype == "fp32" else model
    compiled = {OURS: maybe_compile(model if config.compile else eager, config)}
    twins = load_twins(model, device, x[:2]) if peer else []
    compiled.update({twin.label: maybe_compile(twin.logits, config) for twin in twins})
    contenders = {label: _call(fn, x, config.dtype) for label, fn in compiled.items()}
    if config.compile:
        contenders[OURS_EAGER] = _call(eager, x, config.dtype)
    gemm_fn, gemm_flop = gemm(device, config.dtype, config.gemm_size or default_size(device))
    contenders[GEMM] = gemm_fn
    warmup = max(config.warmup, 2) if config.compile else config.warmup  # the eager call, then the compiling one
    with torch.inference_mode():
        samples = race(contenders, device, config.repeats, warmup, min_sample_s=0.2 if device.type == "cuda" else 0)

    row = Row(task="inference", model=name, batch=batch, dtype=config.dtype, device=device.type,
              compile=config.compile, gflop_per_image=forward_gflop(name, size, model_overrides(config)),
              note=compile_note(compiled))
    fill_figures(row, samples, OURS, [t.label for t in twins], (GEMM, gemm_flop), device)
    if config.compile:
        row.ours_eager_img_s = batch / samples[OURS_EAGER].median
    if twins:
        row.peer_max_abs_diff = max(t.max_abs_diff for t in twins)
    return row


__all__ = ["bench_inference"]
