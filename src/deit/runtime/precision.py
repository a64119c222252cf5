"""Mixed precision: the amp modes a run may use and the autocast context each one means."""

from __future__ import annotations

import contextlib
import typing
from typing import Literal

import torch

AmpMode = Literal["none", "bf16", "fp16"]
AMP_MODES: tuple[str, ...] = typing.get_args(AmpMode)
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for ``amp`` on ``device``'s type ("none": a no-op context)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp {amp!r} is not one of {', '.join(AMP_MODES)}")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[amp])


__all__ = ["AMP_MODES", "AmpMode", "autocast"]
