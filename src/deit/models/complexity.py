"""Parameter counts and multiply-accumulate counts in the two conventions the DeiT ecosystem publishes.

- ``gmacs_linear``: MACs of every Linear and Conv (bias not counted) plus one op per GELU output element. This is
  the OpenMMLab model-zoo "Flops(G)" column (mmpretrain's DeiT tables, which the shared reference quotes).
- ``gmacs_total``: Linear and Conv MACs plus the two attention matmuls (QK^T and AV) plus 5 ops per LayerNorm
  element. This is timm's results table (fvcore).

Counted with forward hooks on a meta-device copy of the model, so any architecture and input size works and
nothing is allocated, even for DeiT-B at 384 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from deit.models.vit_blocks import Attention


@dataclass(frozen=True)
class Complexity:
    params: int
    gmacs_linear: float
    gmacs_total: float


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int, in_chans: int = 3) -> tuple[int, int]:
    """(linear-convention MACs, total-convention MACs) of one forward pass on a single image."""
    counts = {"linear": 0, "gelu": 0, "attn": 0, "norm": 0}

    def on_linear(m: nn.Linear, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        counts["linear"] += math.prod(inp[0].shape[:-1]) * m.in_features * m.out_features

    def on_conv(m: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        counts["linear"] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def on_gelu(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        counts["gelu"] += out.numel()

    def on_norm(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        counts["norm"] += 5 * out.numel()

    def on_attn(m: Attention, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        b, n, d = inp[0].shape
        counts["attn"] += 2 * b * n * n * d  # QK^T and AV, each N*N*head_dim per head

    hooks = []
    for m in model.modules():
        hook = {nn.Linear: on_linear, nn.Conv2d: on_conv, nn.GELU: on_gelu, nn.LayerNorm: on_norm}.get(type(m))
        if isinstance(m, Attention):
            hook = on_attn
        if hook is not None:
            hooks.append(m.register_forward_hook(hook))
    try:
        param = next(model.parameters())
        x = torch.zeros(1, in_chans, input_size, input_size, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return counts["linear"] + counts["gelu"], counts["linear"] + counts["attn"] + counts["norm"]


def measure(model: nn.Module, input_size: int, in_chans: int = 3) -> Complexity:
    linear, total = count_macs(model, input_size, in_chans)
    return Complexity(params=count_params(model), gmacs_linear=linear / 1e9, gmacs_total=total / 1e9)
