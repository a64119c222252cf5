"""The Vision Transformer of DeiT, with or without the distillation token.

One class covers every DeiT variant: the distillation token is a configuration flag. Parameter names follow the
official / timm layout (``blocks.{i}.attn.qkv`` ...), so official checkpoints load without renaming.

Contract (shared by every classifier in ``deit.models``):
    forward_features(x) -> tokens after the final norm, (B, prefix + patches, D)
    forward_head(tokens) -> logits, (B, num_classes)
    forward(x) -> logits, always one tensor, whatever ``model.training`` is.
A distilled model also has ``forward_heads(x) -> (cls_logits, dist_logits)`` for training and analysis.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from deit.models.pos_embed import resample_pos_embed
from deit.models.preprocessing import Preprocessing

HeadMode = Literal["avg", "cls", "dist"]
HEAD_MODES: tuple[str, ...] = ("avg", "cls", "dist")


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
    head_mode: str = "avg"

    def __post_init__(self) -> None:
        problems = []
        if self.img_size % self.patch_size:
            problems.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
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


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample, rescaling the kept ones."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


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


class VisionTransformer(nn.Module):
    """DeiT / ViT classifier. See the module docstring for the forward contract."""

    def __init__(self, cfg: ViTConfig, preprocessing: Preprocessing | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.preprocessing = preprocessing or Preprocessing(input_size=cfg.img_size)
        self.class_names: list[str] | None = None
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear over depth
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.head_dist = None
        if cfg.distilled:
            self.head_dist = nn.Linear(d, cfg.num_classes) if cfg.num_classes else nn.Identity()
        self.head_mode: str = cfg.head_mode
        self.init_weights()

    # ----------------------------------------------------------------------------------------------- set-up
    def init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        self.apply(_init_module)

    def reset_classifier(self, num_classes: int) -> None:
        """New class count: both heads are re-initialised (a stale head_dist is a classic transfer bug)."""
        d = self.config.embed_dim
        self.head = nn.Linear(d, num_classes) if num_classes else nn.Identity()
        if self.config.distilled:
            self.head_dist = nn.Linear(d, num_classes) if num_classes else nn.Identity()
        for h in (self.head, self.head_dist):
            if isinstance(h, nn.Linear):
                _init_module(h)
        self.config = replace(self.config, num_classes=num_classes)
        self.class_names = None

    def set_img_size(self, img_size: int) -> None:
        """Change the native resolution: pos_embed is resampled bicubically on the patch grid."""
        grid = img_size // self.config.patch_size
        new = resample_pos_embed(self.pos_embed.data, (grid, grid), self.config.num_prefix_tokens)
        self.config = replace(self.config, img_size=img_size)
        self.pos_embed = nn.Parameter(new)
        self.preprocessing = replace(self.preprocessing, input_size=img_size)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def num_prefix_tokens(self) -> int:
        return self.config.num_prefix_tokens

    @property
    def distilled(self) -> bool:
        return self.config.distilled

    def no_weight_decay(self) -> set[str]:
        """Parameters the recipe exempts from weight decay besides biases and norms."""
        return {"pos_embed", "cls_token", "dist_token"}

    # ---------------------------------------------------------------------------------------------- forward
    def _pos_embed(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        pos = self.pos_embed
        native = self.config.grid_size
        if grid_hw != (native, native):
            if not self.config.dynamic_img_size:
                raise ValueError(
                    f"input gives a {grid_hw[0]}x{grid_hw[1]} patch grid but the model was built for "
                    f"{self.config.img_size}px ({native}x{native}); create it with dynamic_img_size=True, or "
                    f"resize the model with set_img_size({grid_hw[0] * self.config.patch_size})"
                )
            pos = resample_pos_embed(pos, grid_hw, self.num_prefix_tokens)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        return self.pos_drop(torch.cat([*prefix, x], dim=1) + pos)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the prefix tokens prepended and position embedding added: the input of block 0."""
        grid_hw = (x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size)
        return self._pos_embed(self.patch_embed(x), grid_hw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token states at the input of the encoder and after every block (before the final norm)."""
        x = self.embed(x)
        states = [x]
        for blk in self.blocks:
            x = blk(x)
            states.append(x)
        return states

    def _heads(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.head_dist is None:
            raise ValueError(
                "this model has no distillation token, so it has no distillation head; "
                "use a *_distilled_* model (e.g. deit_tiny_distilled_patch16_224) for distillation"
            )
        return self.head(tokens[:, 0]), self.head_dist(tokens[:, 1])

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.head_dist is None:
            return self.head(tokens[:, 0])
        if self.head_mode == "cls":
            return self.head(tokens[:, 0])
        if self.head_mode == "dist":
            return self.head_dist(tokens[:, 1])
        cls_logits, dist_logits = self._heads(tokens)
        return (cls_logits + dist_logits) / 2

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls_logits, dist_logits) of a distilled model, for the two-term training loss."""
        return self._heads(self.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_head_mode(self, mode: str) -> None:
        self.config = replace(self.config, head_mode=mode)  # validates
        self.head_mode = mode


def _init_module(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    # The patch projection keeps PyTorch's default Conv2d init, as in the reference implementation.


__all__ = ["HEAD_MODES", "ViTConfig", "VisionTransformer"]
