"""ViTConfig: the architecture of a (Dei)T, and how to read it back from a state dict's weights."""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from deit.models.contract import HEAD_MODES, HeadMode
from deit.models.fields import role

# How the stochastic depth rate of block i follows from drop_path_rate: "linear" grows it from 0 in the first
# block to drop_path_rate in the last (DeiT), "uniform" uses drop_path_rate in every block (DeiT III).
DropPathSchedule = Literal["linear", "uniform"]
DROP_PATH_SCHEDULES: tuple[str, ...] = typing.get_args(DropPathSchedule)
# The init_values infer_config reports for a state dict with LayerScale: the weights say that the gammas exist,
# not what they were initialised to, and once the trained gammas are loaded the initial value plays no part.
INFERRED_INIT_VALUES = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a (Dei)T. Everything needed to rebuild the model travels in checkpoints as this dict."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = role(1000, "output")
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    distilled: bool = False
    drop_rate: float = role(0.0, "training")
    attn_drop_rate: float = role(0.0, "training")
    drop_path_rate: float = role(0.0, "training")
    layer_norm_eps: float = 1e-6
    # Accept inputs whose size differs from img_size by resampling pos_embed on the fly.
    dynamic_img_size: bool = role(False, "output")
    head_mode: HeadMode = role("avg", "output")
    # LayerScale (DeiT III, CaiT): None = none; a number = the initial value of the per-channel scales (ls1.gamma,
    # ls2.gamma) on both residual branches of every block (DeiT III's code uses 1e-4, timm's deit3 1e-6).
    init_values: float | None = role(None, "presence")
    # True: pos_embed has rows for the prefix tokens (cls, dist) and is added after they are prepended (DeiT).
    # False: pos_embed covers the patch tokens only and the prefix tokens, prepended after it, get none (DeiT III,
    # timm's no_embed_class=True).
    prefix_pos_embed: bool = True
    drop_path_schedule: DropPathSchedule = role("linear", "training")

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
        if self.drop_path_schedule not in DROP_PATH_SCHEDULES:
            problems.append(f"drop_path_schedule {self.drop_path_schedule!r} is not one of {DROP_PATH_SCHEDULES}")
        if self.init_values is not None and (
            isinstance(self.init_values, bool) or not isinstance(self.init_values, (int, float))
            or not math.isfinite(self.init_values)
        ):
            problems.append(f"init_values must be a number (LayerScale's initial scale, e.g. 1e-4) or None (no "
                            f"LayerScale), got {self.init_values!r}")
        for name in ("depth", "num_classes", "patch_size", "in_chans"):
            if getattr(self, name) < (0 if name == "num_classes" else 1):
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid ViTConfig: " + "; ".join(problems))

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens in the sequence: cls, and dist for a distilled model."""
        return 2 if self.distilled else 1

    @property
    def pos_embed_prefix_tokens(self) -> int:
        """Rows of pos_embed before the patch grid's: the prefix tokens' with prefix_pos_embed, else none. Use it
        wherever pos_embed's rows are split into prefix and grid (resampling to another resolution)."""
        return self.num_prefix_tokens if self.prefix_pos_embed else 0

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens in the sequence the blocks see (prefix + patches), whatever pos_embed covers."""
        return self.num_prefix_tokens + self.grid_size**2

    @property
    def pos_embed_shape(self) -> tuple[int, int, int]:
        return (1, self.pos_embed_prefix_tokens + self.grid_size**2, self.embed_dim)

    def drop_path_rates(self) -> list[float]:
        """The stochastic depth rate of each block, by ``drop_path_schedule``."""
        if self.drop_path_schedule == "uniform":
            return [self.drop_path_rate] * self.depth
        return [self.drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]

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
    """The ViTConfig of a canonical (official/timm) DeiT state dict, or None if the keys are not a DeiT's; raises
    ValueError naming the reason when they are a DeiT's but their shapes fit no ViTConfig.

    The weights give everything but the head count (heads only split the qkv projection): it follows the DeiT
    convention (192 -> 3, 384 -> 6, 768 -> 12, else dim // 64); callers override it from an HF config.json or
    an explicit ``num_heads=``. LayerNorm eps is DeiT's 1e-6 unless the caller knows better. LayerScale
    (``blocks.0.ls1.gamma``) comes back as ``init_values=INFERRED_INIT_VALUES``: the gammas exist, their initial
    value is not recorded and does not matter once they are loaded. pos_embed with rows for the prefix tokens
    (cls[, dist] + a square grid) gives ``prefix_pos_embed=True``, a square grid alone ``False`` (DeiT III). The
    drop-path schedule is a training setting the weights do not record: it stays the default.
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
    side, prefix_pos_embed = _pos_embed_grid(int(pos.shape[1]), 2 if distilled else 1)
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
        init_values=INFERRED_INIT_VALUES if "blocks.0.ls1.gamma" in state_dict else None,
        prefix_pos_embed=prefix_pos_embed,
    )


def _pos_embed_grid(rows: int, prefix: int) -> tuple[int, bool]:
    """(grid side, prefix_pos_embed) of a pos_embed with ``rows`` rows for a model with ``prefix`` prefix tokens.

    Both readings cannot fit one row count: k*k + 1 and k*k + 2 are never squares for k >= 1."""
    for patches, with_prefix in ((rows - prefix, True), (rows, False)):
        side = math.isqrt(max(patches, 0))
        if patches > 0 and side * side == patches:
            return side, with_prefix
    tokens = "cls and dist tokens" if prefix == 2 else "cls token"
    raise ValueError(
        f"pos_embed has {rows} rows: neither {prefix} row(s) for the {tokens} plus a square patch grid (DeiT) nor "
        "a square patch grid alone (DeiT III); the file is not a square-grid ViT, or its prefix tokens "
        "(cls_token, dist_token) do not belong with this pos_embed"
    )


__all__ = [
    "DEIT_WIDTHS",
    "DROP_PATH_SCHEDULES",
    "HEAD_DIM",
    "INFERRED_INIT_VALUES",
    "DropPathSchedule",
    "ViTConfig",
    "conventional_num_heads",
    "infer_config",
]
