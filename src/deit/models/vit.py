"""The Vision Transformer of DeiT and DeiT III, with or without the distillation token.

One class covers every variant: the distillation token, LayerScale (``init_values``), a position embedding of the
patch tokens only (``prefix_pos_embed=False``) and the stochastic-depth schedule are ViTConfig fields; with their
defaults the model is DeiT's. Parameter names follow the official / timm layout (``blocks.{i}.attn.qkv``,
``blocks.{i}.ls1.gamma`` ...), so official checkpoints load without renaming. For CPU inference,
``deit.models.fusion.fuse_for_cpu_inference`` gives a faster copy.

The contract (``deit.models.contract``): ``forward_features(x)`` -> tokens after the final norm,
(B, prefix + patches, D); ``forward_head(tokens)`` -> logits; ``forward(x)`` -> one logits tensor in train and
eval mode. A distilled model has two heads: ``forward_heads(x) -> (cls_logits, dist_logits)`` for training and
analysis, and ``head_mode`` ("avg", "cls", "dist") says what ``forward`` returns. Both go through ``head_tokens``:
the heads read the prefix tokens alone, so the last block computes only theirs (~1/depth less work). The layers are in
``vit_blocks.py``, the config and its inference from a state dict in ``vit_config.py``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.nn.modules.module import (
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
)

from deit.models.contract import HEAD_MODES, Classifier, combine_heads
from deit.models.pos_embed import resample_pos_embed
from deit.models.preprocessing import Preprocessing
from deit.models.vit_blocks import Block, PatchEmbed, takes_prefix
from deit.models.vit_config import ViTConfig

# Hooks that would see the last block's tokens (or their gradients): with any of them, every token is computed.
GLOBAL_HOOKS = (_global_forward_hooks, _global_forward_pre_hooks, _global_backward_hooks, _global_backward_pre_hooks)
MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class VisionTransformer(Classifier):
    """DeiT / ViT classifier. See ``deit.models.contract`` for the forward contract."""

    classifier_prefixes = ("head.", "head_dist.")

    def __init__(self, cfg: ViTConfig, preprocessing: Preprocessing | None = None) -> None:
        super().__init__(cfg, preprocessing or Preprocessing(input_size=cfg.img_size))
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(cfg.pos_embed_shape))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(Block(cfg, r) for r in cfg.drop_path_rates())
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
        new = resample_pos_embed(self.pos_embed.data, (grid, grid), self.config.pos_embed_prefix_tokens)
        self.config = replace(self.config, img_size=img_size)
        self.pos_embed = nn.Parameter(new)
        self.preprocessing = replace(self.preprocessing, input_size=img_size)

    @property
    def num_prefix_tokens(self) -> int:
        return self.config.num_prefix_tokens

    @property
    def distilled(self) -> bool:
        return self.config.distilled

    @property
    def two_heads(self) -> bool:
        """A distilled model has a class head and a distillation head (the contract's question)."""
        return self.config.distilled

    def no_weight_decay(self) -> set[str]:
        """Parameters the recipe exempts from weight decay besides biases and norms."""
        return {"pos_embed", "cls_token", *(["dist_token"] if self.dist_token is not None else [])}

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
            pos = resample_pos_embed(pos, grid_hw, self.config.pos_embed_prefix_tokens)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        if not self.config.prefix_pos_embed:  # DeiT III: the patch tokens alone have positions
            return self.pos_drop(torch.cat([*prefix, x + pos], dim=1))
        return self.pos_drop(torch.cat([*prefix, x], dim=1) + pos)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the prefix tokens prepended and position embedding added (to every token, or to the
        patch tokens only: ``config.prefix_pos_embed``): the input of block 0."""
        grid_hw = (x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size)
        return self._pos_embed(self.patch_embed(x), grid_hw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def head_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The prefix tokens (class, distillation) after the final norm, (B, prefix, D): all the heads read.
        ``forward_features(x)[:, :prefix]`` to rounding, for ~1/depth less work: the last block computes the prefix
        tokens' outputs alone (they still attend to every token), since no head reads the patch tokens' outputs.
        Where something could watch those outputs (a forward or backward hook on the last block, one of its layers or
        the final norm, a global hook) or the last block is not a stock one, every token is computed, as before."""
        prefix = self.num_prefix_tokens
        *body, last = self.blocks
        if not self._may_trim(last):
            return self.forward_features(x)[:, :prefix]
        x = self.embed(x)
        for blk in body:
            x = blk(x)
        return self.norm(last(x, prefix))

    def _may_trim(self, last: nn.Module) -> bool:
        if not takes_prefix(last) or any(GLOBAL_HOOKS):
            return False
        watched = (*last.modules(), self.norm)
        return not any(getattr(m, hooks) for m in watched for hooks in MODULE_HOOKS)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.head_tokens(x))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.head_dist is None or self.head_mode == "cls":
            return self.head(tokens[:, 0])
        if self.head_mode == "dist":
            return self.head_dist(tokens[:, 1])
        return combine_heads(*self._heads(tokens), "avg")

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cls_logits, dist_logits) of a distilled model, for the two-term training loss."""
        return self._heads(self.head_tokens(x))

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
