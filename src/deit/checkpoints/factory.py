"""Models with weights: ``deit.create_model(name, pretrained=...)`` and ``load_model`` (the one way every
command and library function turns a checkpoint path, with or without a named architecture, into a model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from deit.checkpoints.loading import load_checkpoint
from deit.checkpoints.pretrained import load_pretrained_weights
from deit.models import registry


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    img_size: int | None = None,
    drop_path_rate: float | None = None,
    pretrained: bool | str | os.PathLike = False,
    **config_overrides: Any,
) -> nn.Module:
    """Build a named model; ``config_overrides`` set any other field of its config (e.g. ``head_mode``, ``depth``).

    ``pretrained=True`` loads the official release weights (downloaded once into the torch hub cache and checked
    against their sha256 prefix); a path or URL loads weights from that file in any supported layout. Weights
    for another class count or image size are adapted: heads re-initialised, pos_embed resampled.
    """
    if not pretrained:
        return registry.build_architecture(name, num_classes=num_classes, img_size=img_size,
                                     drop_path_rate=drop_path_rate, **config_overrides)
    entry = registry.get_entry(name)
    # Build at the checkpoint's native size and class count, load, then adapt: the same path as fine-tuning.
    model = registry.build_architecture(name, drop_path_rate=drop_path_rate, **config_overrides)
    load_pretrained_weights(model, entry, pretrained)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    if img_size is not None and hasattr(model.config, "img_size") and img_size != model.config.img_size:
        model.set_img_size(img_size)
    return model


def load_model(checkpoint: str | os.PathLike, architecture: str | None = None, **overrides: Any) -> nn.Module:
    """A checkpoint file as a model in eval mode: any layout that records its architecture, or weights of any
    layout loaded into the registered ``architecture`` (for files whose keys do not say it, e.g. a timm RegNet)."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {os.fspath(checkpoint)!r} does not exist")
    if architecture:
        return create_model(architecture, pretrained=os.fspath(path), **overrides).eval()
    return load_checkpoint(path, **overrides).eval()


__all__ = ["create_model", "load_model"]
