"""Architecture from weights: which family a canonical state dict belongs to, and its config.

Only submodules of ``deit.models`` are imported here (never the package itself), because ``deit.models.zoo``
imports :func:`infer_vit_config` while ``deit.models`` is still being initialised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from deit.checkpoints.errors import UnknownLayoutError
from deit.checkpoints.layouts import LAYOUT_HELP, key_prefixes
from deit.models.vit import ViTConfig

# DeiT's widths and head counts (head dim 64 everywhere); other widths fall back to dim // 64.
DEIT_HEADS: dict[int, int] = {192: 3, 384: 6, 768: 12}


def conventional_num_heads(embed_dim: int) -> int:
    if embed_dim in DEIT_HEADS:
        return DEIT_HEADS[embed_dim]
    if embed_dim >= 64 and embed_dim % 64 == 0:
        return embed_dim // 64
    return 1


def infer_vit_config(state_dict: Mapping[str, torch.Tensor]) -> ViTConfig | None:
    """The ViTConfig of a canonical (official/timm) DeiT state dict, or None if the keys are not a DeiT's.

    The weights give everything but the head count (heads only split the qkv projection): it follows the DeiT
    convention (192 -> 3, 384 -> 6, 768 -> 12, else dim // 64); callers override it from an HF config.json or
    an explicit ``num_heads=``. LayerNorm eps is DeiT's 1e-6 unless the caller knows better.
    """
    required = ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.attn.qkv.weight")
    if not all(k in state_dict for k in required):
        return None
    proj = state_dict["patch_embed.proj.weight"]
    pos = state_dict["pos_embed"]
    if proj.ndim != 4 or pos.ndim != 3 or proj.shape[-1] != proj.shape[-2]:
        return None
    embed_dim, in_chans, patch_size = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[-1])
    distilled = "dist_token" in state_dict
    prefix = 2 if distilled else 1
    patches = int(pos.shape[1]) - prefix
    side = math.isqrt(max(patches, 0))
    if patches <= 0 or side * side != patches:
        return None  # not a square grid: let the loader report the shapes
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    fc1 = state_dict.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    head = state_dict.get("head.weight")
    return ViTConfig(
        img_size=side * patch_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=int(head.shape[0]) if head is not None else 0,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=conventional_num_heads(embed_dim),
        mlp_ratio=mlp_ratio,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        distilled=distilled,
    )


def infer_architecture(state_dict: Mapping[str, torch.Tensor], layout: str = "timm") -> tuple[str, Any]:
    """(family name, config) of the first registered family whose ``infer_config`` accepts these keys."""
    from deit.models.registry import FAMILIES

    problems: list[str] = []
    for name, family in FAMILIES.items():
        if family.infer_config is None:
            continue
        try:
            config = family.infer_config(state_dict)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        if config is not None:
            return name, config
    known = [n for n, f in FAMILIES.items() if f.infer_config is not None]
    extra = f" ({'; '.join(problems)})" if problems else ""
    raise UnknownLayoutError(
        f"cannot recognise this checkpoint: read as {layout} keys, it matches no architecture family "
        f"({', '.join(known)}){extra}. Key prefixes seen: {key_prefixes(state_dict)}. {LAYOUT_HELP}."
    )
