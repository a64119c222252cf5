"""The layers of the Vision Transformer: patch embedding, attention, MLP, LayerScale and the pre-norm block.
Parameter names follow the official / timm layout (``blocks.{i}.attn.qkv``, ``blocks.{i}.ls1.gamma`` ...)."""

from __future__ import annotations

import torch
from torch import nn

from deit.models.attention import attention, check_attn_impl
from deit.models.layers import DropPath
from deit.models.vit_config import ViTConfig


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention. ``attn_impl`` (a plain attribute, in no state dict) says which kernel computes it:
    "auto" (the measured faster of sdpa and matmul + softmax, see ``deit.models.attention``), "sdpa" or "math"."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.attn_impl = "auto"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)  # rows = [q | k | v]
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, 3D) projections -> q, k, v, each (B, H, N, hd), as strided views.

        Unbinding the (3) axis in place, rather than permuting it to the front, makes the backward pass stack the
        three gradients straight into the (B, N, 3, H, hd) layout of the qkv output: no extra copy per block.
        """
        b, n, _ = qkv.shape
        q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.split_heads(self.qkv(x))

    def attend(self, qkv: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
        """Scaled dot-product attention of the (B, N, 3D) projections; heads merged back to (B, N, D). With
        ``prefix``, only the first ``prefix`` tokens ask (each still attends to all N): (B, prefix, D)."""
        b, n, three_c = qkv.shape
        q, k, v = self.split_heads(qkv)
        if prefix is not None:
            q, n = q[:, :, :prefix], prefix
        dropout = self.attn_drop if self.training else 0.0
        out = attention(q, k, v, self.attn_impl, dropout)
        return out.transpose(1, 2).reshape(b, n, three_c // 3)

    def forward(self, x: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
        return self.proj_drop(self.proj(self.attend(self.qkv(x), prefix)))

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights (B, H, N, N) for analysis; the forward pass never materialises them."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)


def takes_prefix(block: nn.Module) -> bool:
    """Whether ``block(x, prefix=n)`` works: declared by the block's own class (deit's Block, its fused copy), never
    inherited, since a subclass with a forward of its own may not take the argument."""
    return bool(type(block).__dict__.get("TAKES_PREFIX", False))


def set_attn_impl(model: nn.Module, impl: str) -> int:
    """Make every attention layer of ``model`` compute by ``impl`` (auto, sdpa, math); returns how many there are.
    Weights and state dicts are unchanged. Raises ValueError for an unknown ``impl``, or for a forced one
    ("sdpa"/"math") on a model without attention layers (a convnet), where it would silently do nothing."""
    check_attn_impl(impl)
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if not layers and impl != "auto":
        raise ValueError(f"attention implementation {impl!r}: {type(model).__name__} has no attention layers; "
                         "leave it at auto")
    for layer in layers:
        layer.attn_impl = impl
    return len(layers)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel learnt scale of a residual branch (CaiT, DeiT III), initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        # torch.full, not init_values * torch.ones: on the meta device (deit info, a refusal's closest-model search)
        # a scalar product first imports torch's reference decompositions, seven seconds.
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + drop_path(ls1(attn(norm1(x)))), then the same with the MLP. ``ls1``/``ls2``
    (LayerScale) exist only with ``cfg.init_values``; without them the block is DeiT's, key for key.

    ``block(x, prefix=n)`` computes the output of the first n tokens alone (they attend to every token, as
    before): all a model's heads read from its last block (see ``takes_prefix``).

    For CPU inference, ``deit.models.fusion.fuse_for_cpu_inference`` turns a model's blocks into fused ones."""

    TAKES_PREFIX = True  # see takes_prefix()

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        scaled = cfg.init_values is not None
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        self.ls1 = LayerScale(dim, cfg.init_values) if scaled else None
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)
        self.ls2 = LayerScale(dim, cfg.init_values) if scaled else None
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
        branch = self.attn(self.norm1(x), prefix)
        if prefix is not None:
            x = x[:, :prefix]
        x = x + self.drop_path1(branch if self.ls1 is None else self.ls1(branch))
        branch = self.mlp(self.norm2(x))
        return x + self.drop_path2(branch if self.ls2 is None else self.ls2(branch))


__all__ = ["Attention", "Block", "LayerScale", "Mlp", "PatchEmbed", "set_attn_impl", "takes_prefix"]
