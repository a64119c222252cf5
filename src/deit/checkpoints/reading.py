"""read_checkpoint: any supported layout in, canonical weights plus the architecture, preprocessing and class
names it implies out. Builds no model (``loading.py`` does)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from deit.checkpoints import io
from deit.checkpoints.errors import CheckpointError
from deit.checkpoints.hf import (
    class_names_from_hf,
    config_from_hf,
    is_hf_directory,
    preprocessing_from_hf,
    read_hf_weights,
    read_json,
)
from deit.checkpoints.infer import infer_architecture
from deit.checkpoints.layouts import Converted, detect_layout, to_canonical, unwrap
from deit.models.preprocessing import Preprocessing
from deit.models.registry import default_preprocessing, families, find_entry, get_family


@dataclass
class CheckpointInfo:
    """What a checkpoint file holds, before any override: enough to build the model."""

    source: str
    layout: str
    family: str
    config: Any
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    class_names: list[str] | None = None
    architecture: str | None = None  # the registered model name whose architecture this is, if any
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        cfg = self.config
        if hasattr(cfg, "embed_dim"):
            arch = (
                f"{'distilled ' if cfg.distilled else ''}ViT embed_dim {cfg.embed_dim}, depth {cfg.depth}, "
                f"heads {cfg.num_heads}, patch {cfg.patch_size}, img_size {cfg.img_size}, "
                f"{cfg.num_classes} classes, LayerNorm eps {cfg.layer_norm_eps:g}"
                f"{', LayerScale' if cfg.init_values is not None else ''}"
                f"{'' if cfg.prefix_pos_embed else ', pos_embed on the patch tokens only'}"
            )
        else:
            arch = f"{self.family} {cfg}"
        name = f" = {self.architecture}" if self.architecture else ""
        return f"layout {self.layout}; {arch}{name}"


def _config_from_dict(config_cls: type, d: dict) -> tuple[Any, list[str]]:
    known = {f.name: f for f in fields(config_cls)}
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        if k not in known:
            continue
        f = known[k]
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if isinstance(v, list) and isinstance(default, tuple):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)  # JSON has no tuples
        kwargs[k] = v
    unknown = sorted(set(d) - set(known))
    notes = [f"ignored config fields this version does not know: {', '.join(unknown)}"] if unknown else []
    return config_cls(**kwargs), notes



def read_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Open a checkpoint in any supported layout: canonical weights plus the architecture, preprocessing and
    class names it implies. Builds no model."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    hf_dir = path if path.is_dir() else path.parent
    if path.is_dir():
        if not is_hf_directory(path):
            present = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
            raise CheckpointError(
                f"{path} is a directory but not a transformers save_pretrained one (no config.json or "
                f"model.safetensors / pytorch_model.bin; it has: {present}); pass a checkpoint file instead"
            )
        obj, metadata = read_hf_weights(path), None
    else:
        obj, metadata = io.read_file(path)

    if io.is_deit_metadata(metadata):
        return _read_ours(path, obj, metadata)

    sd, wrapper = unwrap(obj)
    layout = detect_layout(sd, wrapper)
    conv: Converted = to_canonical(sd, layout)
    family, config = infer_architecture(conv.state_dict, layout)
    notes = list(conv.notes)
    preprocessing: Preprocessing | None = None
    class_names = None
    hf_config = read_json(hf_dir / "config.json") if layout.startswith("hf") else None
    if hf_config is not None and hasattr(config, "embed_dim"):
        fixed, hf_notes = config_from_hf(hf_config, config)
        config = replace(config, **fixed)
        notes += hf_notes
        class_names = class_names_from_hf(hf_config, config.num_classes)
    elif family == "vit" and hasattr(config, "num_heads"):
        notes.append(
            f"num_heads {config.num_heads} follows the DeiT convention for embed_dim {config.embed_dim} "
            "(the weights do not record it); pass num_heads=... if this model differs"
        )
        if layout.startswith("hf"):
            notes.append("no config.json: LayerNorm eps 1e-6 (DeiT's) assumed; pass layer_norm_eps=... if not")
    if conv.hints:
        config = replace(config, **conv.hints)
    pp = read_json(hf_dir / "preprocessor_config.json") if layout.startswith("hf") else None
    if pp is not None:
        preprocessing, pp_notes = preprocessing_from_hf(pp, getattr(config, "img_size", 224))
        notes += pp_notes
    if preprocessing is None:
        preprocessing = default_preprocessing(family, config)
    entry = find_entry(family, config)
    return CheckpointInfo(
        source=str(path),
        layout=layout,
        family=family,
        config=config,
        state_dict=conv.state_dict,
        preprocessing=preprocessing,
        class_names=class_names,
        architecture=entry.name if entry else None,
        notes=notes,
    )


def _read_ours(path: Path, tensors: dict, metadata: dict[str, str]) -> CheckpointInfo:
    family = metadata.get(io.META_FAMILY, "vit")
    try:
        config_cls = get_family(family).config_cls
    except ValueError:
        raise CheckpointError(
            f"{path}: written for architecture family {family!r}, which this installation does not have "
            f"(known: {sorted(f.name for f in families())})"
        ) from None
    try:
        config_dict = json.loads(metadata[io.META_CONFIG])
        pre_dict = json.loads(metadata.get(io.META_PREPROCESSING, "{}"))
        names = json.loads(metadata[io.META_CLASS_NAMES]) if io.META_CLASS_NAMES in metadata else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt deit metadata ({exc})") from None
    config, notes = _config_from_dict(config_cls, config_dict)
    preprocessing = Preprocessing.from_dict(pre_dict) if pre_dict else default_preprocessing(family, config)
    arch = metadata.get(io.META_ARCH)
    return CheckpointInfo(
        source=str(path),
        layout="deit",
        family=family,
        config=config,
        state_dict=dict(tensors),
        preprocessing=preprocessing,
        class_names=list(names) if names is not None else None,
        architecture=arch if arch and arch != "custom" else None,
        notes=notes,
        metadata=dict(metadata),
    )


__all__ = ["CheckpointInfo", "read_checkpoint"]
