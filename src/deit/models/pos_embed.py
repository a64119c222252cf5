"""Position-embedding resampling, shared by dynamic-size inputs and checkpoint fine-tuning at a new resolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix_tokens: int,
    old_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resize a (1, prefix + H*W, D) position embedding to a new patch grid.

    ``num_prefix_tokens`` is the number of pos_embed rows before the grid's (``ViTConfig.pos_embed_prefix_tokens``:
    1 plain, 2 distilled, 0 when pos_embed covers the patch tokens only). Those rows are split off and kept as
    they are; the patch part is reshaped to its grid and resized bicubically with align_corners=False and no
    antialiasing (the paper's, HF's and mmpretrain's rule; timm antialiases, which gives slightly different weights).
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim), got {tuple(pos_embed.shape)}")
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n = patches.shape[1]
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"pos_embed has {n} patch positions after {num_prefix_tokens} prefix tokens, which is not a square "
                "grid; pass old_grid=(h, w) or check num_prefix_tokens (1 plain, 2 distilled, 0 for a pos_embed "
                "of the patch tokens only: ViTConfig.pos_embed_prefix_tokens)"
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {old_grid} does not match {n} patch positions")
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = patches.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    # Interpolate in float32: bicubic on bf16/fp16 weights loses precision and is not implemented everywhere.
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=False)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid], dim=1)
