"""save_checkpoint / save_official: a model out, in our self-describing ``.safetensors`` or the official layout."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deit.checkpoints import io
from deit.checkpoints.layouts import from_canonical
from deit.models.registry import default_preprocessing, family_of, find_entry


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def checkpoint_metadata(model: nn.Module, extra_metadata: dict[str, Any] | None = None) -> dict[str, str]:
    model = unwrap_model(model)
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise ValueError(f"{type(model).__name__} has no dataclass .config: save_checkpoint needs a deit model")
    family = family_of(cfg)
    pre = getattr(model, "preprocessing", None) or default_preprocessing(family, cfg)
    entry = find_entry(family, cfg)
    meta = {
        io.META_FORMAT: io.FORMAT_NAME,
        io.META_VERSION: io.FORMAT_VERSION,
        io.META_FAMILY: family,
        io.META_ARCH: entry.name if entry else "custom",
        io.META_CONFIG: json.dumps(dataclasses.asdict(cfg)),
        io.META_NUM_CLASSES: str(getattr(cfg, "num_classes", "")),
        io.META_IMG_SIZE: str(getattr(cfg, "img_size", pre.input_size)),
        io.META_PREPROCESSING: json.dumps(pre.to_dict()),
    }
    names = getattr(model, "class_names", None)
    if names is not None:
        meta[io.META_CLASS_NAMES] = json.dumps([str(n) for n in names])
    for k, v in (extra_metadata or {}).items():
        if k in io.RESERVED_METADATA:
            raise ValueError(f"extra_metadata key {k!r} is reserved (reserved: {', '.join(io.RESERVED_METADATA)})")
        meta[str(k)] = io.encode_metadata_value(v)
    return meta


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in our layout: a ``.safetensors`` file whose metadata records the family, the full config
    (architecture, num_classes, img_size, head mode ...), the preprocessing and the class names, so
    :func:`load_checkpoint` needs nothing else. ``extra_metadata`` values are stored as strings (JSON if not str).
    """
    path = Path(path)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise ValueError(
            f"save_checkpoint writes safetensors: name the file {path.with_suffix('.safetensors').name}; for an "
            "official-layout .pth use deit.checkpoints.save_official or `deit convert --to official`"
        )
    meta = checkpoint_metadata(model, extra_metadata)
    io.write_safetensors(path, unwrap_model(model).state_dict(), meta)
    return path


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}


def save_official(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``{'model': state_dict}`` in the official key layout (a plain-tensor pickle): timm's names, with a
    LayerScale model's gammas named as DeiT III's ``models_v2.py`` names them (``blocks.{i}.gamma_1``). The file
    holds weights only: :func:`deit.checkpoints.reading.weights_only_losses` says what of ``model`` it cannot record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": from_canonical(_plain_state_dict(model), "official")}, path)
    return path


def save_openmmlab(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``{'meta', 'state_dict'}`` with mmpretrain's names (its DeiT / DeiT3 backbone, ``backbone.layers.{i}``
    ..., and its ViT classification head): a ViT only. Weights only, like :func:`save_official`."""
    model = unwrap_model(model)
    if not hasattr(getattr(model, "config", None), "embed_dim"):
        raise ValueError(f"the openmmlab layout holds DeiT ViTs only, not a {type(model).__name__}; write it in "
                         "the timm or official layout, or ours")
    tensors = from_canonical(_plain_state_dict(model), "openmmlab")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"converted_by": "deit"}, "state_dict": tensors}, path)
    return path


def save_timm(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the bare state dict, as timm does: a ``.safetensors`` (no deit metadata) or a ``.pth`` pickle. The
    file holds weights only: :func:`~deit.checkpoints.reading.weights_only_losses` says what of ``model`` it
    cannot record."""
    path = Path(path)
    if path.suffix == ".safetensors":
        io.write_safetensors(path, _plain_state_dict(model), {"format": "pt"})  # timm's own metadata
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_plain_state_dict(model), path)
    return path


__all__ = ["checkpoint_metadata", "save_checkpoint", "save_official", "save_openmmlab", "save_timm", "unwrap_model"]
