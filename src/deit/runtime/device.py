"""Which device a process computes on: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for a device setting; ``cuda`` means this process's local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    return torch.device(name)


__all__ = ["resolve_device"]
