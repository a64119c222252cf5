"""Mixed precision: the amp modes a run may use, which one ``auto`` means on this machine, and the autocast
context each one means.

``auto`` is bf16 where the hardware computes it natively (CUDA GPUs that support it; CPUs with AVX512_BF16 or
AMX), fp32 elsewhere: on a CPU without those instructions bf16 matrix products are emulated and run hundreds of
times slower than fp32. ``DEIT_ASSUME_BF16`` replaces that probe (``1``: assume the device computes bf16
natively, ``0``: assume it does not), so either resolution can be run, and tested, on any machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import typing
from typing import Literal

import torch

AmpMode = Literal["auto", "none", "bf16", "fp16"]
AMP_MODES: tuple[str, ...] = typing.get_args(AmpMode)
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_NAMES = {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}  # how a console line says each
ASSUME_BF16_ENV = "DEIT_ASSUME_BF16"


@functools.cache
def cpu_bf16_instructions() -> str | None:
    """The CPU's native bf16 instruction set ("AMX" or "AVX512_BF16"), or None."""
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX512_BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        fn = getattr(torch.cpu, probe, None)
        if fn is not None and fn():
            return name
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return "AMX" if "amx_bf16" in flags else "AVX512_BF16" if "avx512_bf16" in flags else None


def assumed_bf16() -> bool | None:
    """What ``DEIT_ASSUME_BF16`` tells ``auto`` to assume: True (``1``), False (``0``), None (unset: probe)."""
    value = os.environ.get(ASSUME_BF16_ENV, "").strip()
    if value in ("", "0", "1"):
        return None if value == "" else value == "1"
    raise ValueError(f"{ASSUME_BF16_ENV}={value!r}: use 1 (assume the device computes bf16 natively), 0 (assume "
                     "it does not) or leave it unset (probe the hardware)")


def decide_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether ``device`` computes bf16 natively, so bf16 is faster than fp32 there; why, in words).

    The one place ``auto`` is decided, for ``amp`` and for the teacher's dtype."""
    assumed = assumed_bf16()
    kind = "GPU" if device.type == "cuda" else device.type.upper()
    if assumed is not None:
        verb = "computes" if assumed else "does not compute"
        return assumed, f"{ASSUME_BF16_ENV}={int(assumed)} says this {kind} {verb} bf16 natively"
    if device.type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return native, "this GPU computes bf16" if native else "this GPU has no bf16"
    if device.type != "cpu":
        return False, f"no native bf16 known on {device.type}"
    instructions = cpu_bf16_instructions()
    if instructions:
        return True, f"this CPU has {instructions}"
    return False, "this CPU has no AVX512_BF16 or AMX: bf16 would be emulated, far slower than fp32"


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str]:
    """(the amp mode to use, why): ``auto`` becomes ``bf16`` or ``none`` by :func:`decide_bf16`."""
    if amp != "auto":
        return amp, "as configured"
    native, why = decide_bf16(device)
    return ("bf16" if native else "none"), why


def precision_line(amp: str, device: torch.device) -> tuple[str, str]:
    """(the mode ``amp`` resolves to on ``device``, the line saying so: ``precision: fp32 (amp=auto: why)``)."""
    mode, why = resolve_amp(amp, device)
    return mode, f"precision: {AMP_NAMES[mode]} (amp={amp}: {why})"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """torch.autocast for ``amp`` on ``device``'s type ("none": a no-op context); resolve "auto" first."""
    if amp not in AMP_MODES or amp == "auto":
        raise ValueError(f"amp {amp!r} is not one of none, bf16, fp16 (resolve 'auto' with resolve_amp first)")
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[amp])


__all__ = ["AMP_MODES", "AMP_NAMES", "ASSUME_BF16_ENV", "AmpMode", "assumed_bf16", "autocast", "cpu_bf16_instructions",
           "decide_bf16", "precision_line", "resolve_amp"]
