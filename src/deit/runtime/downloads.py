"""Downloads that happen once per node: under torch.distributed, local rank 0 of each node fetches (and verifies)
while the other ranks of the node wait at a barrier, then check the file themselves."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _node_downloader() -> tuple[bool, bool]:
    """(a process group is initialised, this process is the one of its node that downloads)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False, True
    return True, int(os.environ.get("LOCAL_RANK", dist.get_rank())) == 0


def once_per_node(ensure: Callable[[], Path], check: Callable[[], Path], missing: Callable[[], Exception]) -> Path:
    """``ensure()`` (fetch if needed, verify, return the path) on one process per node; the node's other
    processes wait, then ``check()`` the result, or raise ``missing()`` when the downloader left no file."""
    initialised, downloader = _node_downloader()
    if not initialised:
        return ensure()
    import torch.distributed as dist

    if downloader:
        try:
            return ensure()
        finally:
            dist.barrier()  # release the waiting ranks even when the download failed
    dist.barrier()
    try:
        return check()
    except FileNotFoundError:
        raise missing() from None


__all__ = ["file_digest", "once_per_node"]
