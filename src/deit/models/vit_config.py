"""ViTConfig: the architecture of a (Dei)T, and how to read it back from a state dict's weights."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from deit.models.contract import HEAD_MODES, HeadMode


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a (Dei)T. Everything needed to rebuild the model travels in checkpoints as this dict."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    distilled: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    # Accept inputs whose size differs from img_size by resampling pos_embed on the fly.
    dynamic_img_size: bool = False
    head_mode: HeadMode = "avg"

    def __post_init__(self) -> None:
        problems = [f"{name} must be positive, got {getattr(self, name)}"
                    for name in ("img_size", "embed_dim", "num_heads") if getattr(self, name) < 1]
        if not problems and self.img_size % max(self.patch_size, 1):
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if not problems and self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not (0 < self.mlp_ratio < 1e6 and self.layer_norm_eps > 0):  # also refuses NaN
            problems.append(f"mlp_ratio {self.mlp_ratio} must be in (0, 1e6) and layer_norm_eps "
                            f"{self.layer_norm_eps} positive")
        if self.head_mode not in HEAD_MODES:
            problems.append(f"head_mode {self.head_mode!r} is not one of {HEAD_MODES}")
        if self.head_mode != "avg" and not self.distilled:
            problems.append(f"head_mode {self.head_mode!r} needs a distilled model (one with a distillation token)")
        for name in ("depth", "num_classes", "patch_size", "in_chans"):
            if getattr(self, name) < (0 if name == "num_classes" else 1):
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid ViTConfig: " + "; ".join(problems))

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_size**2

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The shape in words: ``ViT dim 128, depth 6, 4 heads, patch 4, 32 px, distillation token``."""
        token = ", distillation token" if self.distilled else ""
        return (f"ViT dim {self.embed_dim}, depth {self.depth}, {self.num_heads} heads, patch {self.patch_size}, "
                f"{self.img_size} px{token}")


# The DeiT sizes (paper, Table 1); every one has 64-dimensional attention heads.
DEIT_WIDTHS: dict[str, int] = {"tiny": 192, "small": 384, "base": 768}
HEAD_DIM = 64


def conventional_num_heads(embed_dim: int) -> int:
    """DeiT's head count for a width (192 -> 3, 384 -> 6, 768 -> 12: 64 dimensions a head); 1 for a width that
    is not a multiple of 64."""
    return embed_dim // HEAD_DIM if embed_dim >= HEAD_DIM and embed_dim % HEAD_DIM == 0 else 1


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> ViTConfig | None:
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


__all__ = ["DEIT_WIDTHS", "HEAD_DIM", "ViTConfig", "conventional_num_heads", "infer_config"]
