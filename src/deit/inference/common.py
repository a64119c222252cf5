"""Pieces shared by prediction, export and analysis: loading, the chosen head as one module, class names."""

from __future__ import annotations

import functools
import os
from importlib import resources

import torch
from torch import nn

from deit.checkpoints.factory import load_model
from deit.models.contract import HEAD_MODES, combine_heads, has_two_heads

IMAGENET_NUM_CLASSES = 1000


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (sorted WordNet ids), shipped with the package."""
    text = resources.files("deit").joinpath("assets/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_NUM_CLASSES:
        raise RuntimeError(f"packaged imagenet_classes.txt has {len(names)} names, expected {IMAGENET_NUM_CLASSES}")
    return names


def resolve_class_names(model: nn.Module, num_classes: int | None = None) -> list[str]:
    """The names of a model's outputs: those stored with it, else ImageNet-1k's for 1000 classes, else class_{i}."""
    n = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if n is None:
        raise ValueError("cannot tell how many classes this model has; pass num_classes")
    stored = getattr(model, "class_names", None)
    if stored and len(stored) == n:
        return [str(s) for s in stored]
    if n == IMAGENET_NUM_CLASSES:
        return list(imagenet_class_names())
    return [f"class_{i}" for i in range(n)]


def as_model(checkpoint_or_model: str | os.PathLike | nn.Module) -> nn.Module:
    """A model in eval mode: an nn.Module as given, or a checkpoint of any supported layout loaded from a path
    (load it yourself with ``deit.checkpoints.load_checkpoint(path, **overrides)`` to change its config)."""
    if isinstance(checkpoint_or_model, nn.Module):
        return checkpoint_or_model.eval()
    return load_model(checkpoint_or_model)


def check_head(model: nn.Module, head: str | None) -> None:
    if head is None:
        return
    if head not in HEAD_MODES:
        raise ValueError(f"head {head!r} is not one of {HEAD_MODES}")
    if head == "dist" and not has_two_heads(model):
        raise ValueError(
            "head 'dist' needs a distilled model (one with a distillation token and head_dist); "
            "this model has only the class head: use --head cls or avg"
        )


class InferenceHead(nn.Module):
    """A classifier reduced to one logits output from the chosen head: 'avg' (the paper's inference), 'cls' or
    'dist'. ``None`` keeps the model's own forward. A model without a distillation head has only its class head,
    so 'avg' and 'cls' both mean that head there. Traceable: the branch is fixed at construction."""

    def __init__(self, model: nn.Module, head: str | None = None) -> None:
        super().__init__()
        check_head(model, head)
        self.model = model
        self.head = head if has_two_heads(model) and head is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return self.model(x)
        return combine_heads(*self.model.forward_heads(x), self.head)


def model_input_size(model: nn.Module) -> int:
    prep = getattr(model, "preprocessing", None)
    if prep is not None:
        return int(prep.input_size)
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "img_size"):
        return int(cfg.img_size)
    return 224
