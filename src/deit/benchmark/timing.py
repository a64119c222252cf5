"""Timing that survives a shared, noisy machine: contenders run in alternating rounds, each timed on its own.

Every round calls each contender once (its order rotated from round to round), so a burst of load from another
process lands on all of them alike; the figures are medians over the rounds, with the interquartile spread. On an
accelerator the device is synchronised around every timed call, and a call that is too short to time on its own is
repeated ``inner`` times inside one sample.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: kernels are asynchronous on CUDA, timing without this measures launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Samples:
    """Seconds per call of one contender, one sample per round."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread_pct(self) -> float:
        """Interquartile range of the samples as a percentage of their median."""
        if len(self.seconds) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return 100.0 * (q3 - q1) / self.median


def _time_once(fn: Callable[[], object], device: torch.device, inner: int) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / inner


def race(
    contenders: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    min_sample_s: float = 0.0,
) -> dict[str, Samples]:
    """Time every contender in ``repeats`` alternating rounds after ``warmup`` untimed calls each.

    ``min_sample_s``: a contender whose calls are shorter than this is called several times per sample (set it on
    accelerators, where one call can be well under a millisecond).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    names = list(contenders)
    inner: dict[str, int] = {}
    for name in names:
        for _ in range(warmup):
            contenders[name]()
        first = _time_once(contenders[name], device, 1) if min_sample_s > 0 else 1.0
        inner[name] = max(1, math.ceil(min_sample_s / max(first, 1e-9))) if min_sample_s > 0 else 1
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(_time_once(contenders[name], device, inner[name]))
    return {n: Samples(tuple(s)) for n, s in seconds.items()}


__all__ = ["Samples", "race", "synchronize"]
