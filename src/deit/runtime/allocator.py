"""Freed CPU memory stays in the process, so the next batch's tensors reuse it instead of new pages.

glibc's defaults give large blocks back to the kernel as soon as they are freed: a block above the mmap threshold
(128 KiB, rising to at most 32 MiB) is its own mapping, unmapped on ``free``, and a free heap top above 128 KiB is
trimmed. A DeiT batch's activations are blocks of megabytes (DeiT-Ti at batch 64: 39 MB for one MLP's hidden layer),
so a forward pass keeps asking the kernel for fresh pages and pays a page fault and a zeroing for each 4 KiB of
them: half the time of a cheap element-wise kernel, a few percent of a whole forward pass (measured:
docs/results/benchmark-cpu.md, "freed memory kept").

:func:`keep_freed_memory` makes glibc keep what it frees: no block gets its own mapping (``M_MMAP_MAX`` 0: large
blocks come from the heap and go back to it), and the heap is trimmed only when 2 GiB at its top are free. What
CUDA's caching allocator does for GPU memory, and what jemalloc or tcmalloc preloaded would do. The cost: the
process's resident memory stays near its peak between batches instead of shrinking and growing again.

The ``deit`` command applies it to its own process (loader workers forked from it inherit it, the spawned workers of
``deit reproduce`` apply it as their parent did); ``DEIT_KEEP_FREED_MEMORY=0`` leaves glibc's defaults. A program
using the library calls it itself if it wants it: changing a process's allocator is the process owner's decision, so
importing ``deit`` never does.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "DEIT_KEEP_FREED_MEMORY"  # "0": leave glibc's defaults

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_AT = 2**31 - 1  # mallopt takes an int: the largest free heap top kept, ~2 GiB

DEFAULT = "glibc defaults"
KEPT = "glibc keeps freed memory (no mmap per block, heap trimmed above 2 GiB free)"
_state = DEFAULT


def keep_freed_memory() -> str:
    """Make this process keep the memory it frees (see the module); returns what the allocator does now, in words
    (also :func:`allocator_setting`). Harmless where it cannot apply (not glibc) or where ``DEIT_KEEP_FREED_MEMORY=0``
    opts out: then it changes nothing and says why."""
    global _state
    if os.environ.get(ENV, "1").strip() == "0":
        _state = f"{DEFAULT} ({ENV}=0)"
        return _state
    libc = _glibc()
    if libc is None:
        _state = "the C library's defaults (not glibc: nothing to tune)"
        return _state
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, TRIM_AT) != 1:
        _state = "glibc, as mallopt left it (it refused the setting: freed memory may not be kept)"
        return _state
    _state = KEPT
    return _state


def allocator_setting() -> str:
    """What the CPU allocator of this process does, in words: glibc's defaults unless :func:`keep_freed_memory` ran."""
    return _state


def keeping_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (what a process it starts should do too)."""
    return _state == KEPT


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


__all__ = ["ENV", "allocator_setting", "keep_freed_memory", "keeping_freed_memory"]
