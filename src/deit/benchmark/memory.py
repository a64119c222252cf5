"""Peak tensor memory of one piece of work, above what was allocated when it started.

CUDA: the caching allocator's ``max_memory_allocated``. CPU: the same quantity rebuilt from the profiler's
allocation events (every tensor allocation and free, in time order). Peak RSS would be the obvious CPU figure, but
glibc keeps freed heap memory, so whichever model runs first in a process would pay for the others.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging bypasses ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(work: Callable[[], object], device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured) for one call of ``work``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        work()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "CUDA max allocated above start"
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's start/stop log lines, not the work's own messages
        prof.start()
    try:
        work()
    finally:
        with _quiet_stderr():
            prof.stop()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage  # allocations minus frees made by this op itself
        peak = max(peak, live)
    return peak / 2**20, "peak allocated tensors above start (profiler)"


__all__ = ["peak_memory_mb"]
