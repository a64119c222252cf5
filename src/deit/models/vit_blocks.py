"""The layers of the Vision Transformer: patch embedding, attention, MLP, and the pre-norm block with its fused
CPU inference path. Parameter names follow the official / timm layout (``blocks.{i}.attn.qkv`` ...)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

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
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
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

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention of the (B, N, 3D) projections; heads merged back to (B, N, D)."""
        b, n, three_c = qkv.shape
        q, k, v = self.split_heads(qkv)
        dropout = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return out.transpose(1, 2).reshape(b, n, three_c // 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_drop(self.proj(self.attend(self.qkv(x))))

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights (B, H, N, N) for analysis; the forward pass never materialises them."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# ------------------------------------------------------------------------------------ CPU inference fast path
# On CPU, a Linear is a GEMM plus a pass that copies the bias into the output, and GELU and the residual add are one
# more pass each over the same activations. oneDNN's linear applies bias, GELU or the residual add while the output
# tile is still in cache: the same maths (max abs difference ~1e-6), 10-25% less time per block. The op has no
# autograd formula, so Block uses it only when nothing needs a gradient, and only where the block is exactly what
# this file builds (no hooks, no swapped-in layers) so that hooks and custom modules still see every call.


@functools.cache
def _onednn_linear_works() -> bool:
    """Whether this torch build has oneDNN's fused linear and it agrees with Linear -> GELU (checked once)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x, w, b = torch.linspace(-2, 2, 24).view(2, 3, 4), torch.linspace(-1, 1, 20).view(5, 4), torch.ones(5)
        with torch.no_grad():
            fused = op(x, w, b, "gelu", [], "none")
        return torch.allclose(fused, F.gelu(F.linear(x, w, b)), atol=1e-5)
    except (AttributeError, RuntimeError):
        return False


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _fusable(block: Block, x: torch.Tensor) -> bool:
    if block.training or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling() or _cpu_autocast_enabled():
        return False  # exporters and compilers see the plain graph; autocast picks its own kernels
    attn, mlp = block.attn, block.mlp
    if not (
        all(type(m) is nn.Linear for m in (attn.qkv, attn.proj, mlp.fc1, mlp.fc2))
        and type(mlp.act) is nn.GELU
        and mlp.act.approximate == "none"
    ):
        return False
    bypassed = (attn, attn.qkv, attn.proj, attn.proj_drop, mlp, mlp.fc1, mlp.act, mlp.fc2, mlp.drop,
                block.drop_path1, block.drop_path2)
    if _global_forward_hooks or _global_forward_pre_hooks or any(
        m._forward_hooks or m._forward_pre_hooks for m in bypassed
    ):
        return False
    return _onednn_linear_works()


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fusable(self, x):
            return self._forward_fused(x)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The same block for CPU inference, with oneDNN doing bias, GELU and the residual add inside each GEMM."""
        linear = torch.ops.mkldnn._linear_pointwise
        attn, mlp = self.attn, self.mlp
        qkv = linear(self.norm1(x), attn.qkv.weight, attn.qkv.bias, "none", [], "")
        x = linear.binary(attn.attend(qkv), x, attn.proj.weight, attn.proj.bias, "add")
        h = linear(self.norm2(x), mlp.fc1.weight, mlp.fc1.bias, "gelu", [], "none")
        return linear.binary(h, x, mlp.fc2.weight, mlp.fc2.bias, "add")


__all__ = ["Attention", "Block", "Mlp", "PatchEmbed"]
