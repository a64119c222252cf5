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
from torch import nn

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
from deit.checkpoints.saving import unwrap_model
from deit.models.fields import fields_with_role
from deit.models.preprocessing import Preprocessing
from deit.models.registry import default_preprocessing, families, find_entry, get_family
from deit.runtime.typedconfig import ConfigError, from_dict


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


def _config_from_dict(config_cls: type, d: Any) -> tuple[Any, list[str]]:
    """The family's config from our metadata's JSON, every value type-checked (a corrupt header is an error,
    not a model of whatever shape); fields this version does not know are ignored, with a note."""
    if not isinstance(d, dict):
        raise ConfigError(f"the config is a {type(d).__name__}, not a mapping of fields")
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(str(k) for k in set(d) - known)
    notes = [f"ignored config fields this version does not know: {', '.join(unknown)}"] if unknown else []
    return from_dict(config_cls, {k: v for k, v in d.items() if k in known}), notes


def read_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Open a checkpoint in any supported layout: canonical weights plus the architecture, preprocessing and
    class names it implies. Builds no model."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    hf_dir = path if path.is_dir() else path.parent
    if path.is_dir():
        weights = [path / n for n in ("best.safetensors", "last.safetensors") if (path / n).is_file()]
        if not is_hf_directory(path) and weights:
            raise CheckpointError(f"{path} is a directory (a training run's?); pass its weights file, {weights[0]}")
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
    return checkpoint_info(obj, str(path), hf_dir)


def checkpoint_info(obj: Any, source: str, hf_dir: Path | None = None) -> CheckpointInfo:
    """What a loaded file's content without our metadata (a state dict, or a dict holding one) implies: the
    layout, architecture and preprocessing a reader infers from the weights (and, for an HF layout, from the
    ``config.json`` and ``preprocessor_config.json`` in ``hf_dir``)."""
    sd, wrapper = unwrap(obj)
    layout = detect_layout(sd, wrapper)
    conv: Converted = to_canonical(sd, layout)
    family, config = infer_architecture(conv.state_dict, layout)
    notes = list(conv.notes)
    preprocessing: Preprocessing | None = None
    class_names = None
    hf = hf_dir is not None and layout.startswith("hf")
    hf_config = read_json(hf_dir / "config.json") if hf else None
    if hf_config is not None and hasattr(config, "embed_dim"):
        fixed, hf_notes = config_from_hf(hf_config, config)
        config = replace(config, **fixed)
        notes += hf_notes
        class_names = class_names_from_hf(hf_config, config.num_classes)
    elif family == "vit" and hasattr(config, "num_heads"):
        config, note = _unrecorded_from_registry(family, config)
        notes.append(note or (
            f"num_heads {config.num_heads} follows the DeiT convention for embed_dim {config.embed_dim} "
            "(the weights do not record it); pass num_heads=... if this model differs"
        ))
        if layout.startswith("hf"):
            notes.append("no config.json: LayerNorm eps 1e-6 (DeiT's) assumed; pass layer_norm_eps=... if not")
    if conv.hints:
        config = replace(config, **conv.hints)
    pp = read_json(hf_dir / "preprocessor_config.json") if hf else None
    if pp is not None:
        preprocessing, pp_notes = preprocessing_from_hf(pp, getattr(config, "img_size", 224))
        notes += pp_notes
    if preprocessing is None:
        preprocessing = default_preprocessing(family, config)
    entry = find_entry(family, config)
    return CheckpointInfo(
        source=source,
        layout=layout,
        family=family,
        config=config,
        state_dict=conv.state_dict,
        preprocessing=preprocessing,
        class_names=class_names,
        architecture=entry.name if entry else None,
        notes=notes,
    )


def _unrecorded_from_registry(family: str, config: Any) -> tuple[Any, str | None]:
    """The config with what the weights cannot tell (``Family.unrecorded``: the ViT's head count) taken from the
    registered model whose weights look the same (ViT-H's 16 heads of 80 dimensions), and a note saying so; the
    config as inferred, and None, when no registered model looks the same."""
    unrecorded = get_family(family).unrecorded
    entry = find_entry(family, config, ignoring=unrecorded) if unrecorded else None
    if entry is None:
        return config, None
    values = {name: getattr(entry.config, name) for name in unrecorded}
    said = ", ".join(f"{k} {v}" for k, v in values.items())
    return replace(config, **values), (f"{said} as {entry.name}, whose weights these look like (the weights do not "
                                       f"record it); pass {unrecorded[0]}=... if this model differs")


# A config size (width, depth, image size ...) this many times beyond every dimension of the file's own tensors
# is a corrupt header: refused before it asks for a model of any size (weights that do not fit are caught anyway,
# but only after building).
_SIZE_FACTOR = 16


def _check_sizes(config: Any, tensors: dict[str, torch.Tensor]) -> None:
    limit = _SIZE_FACTOR * max([len(tensors), *(max(t.shape, default=1) for t in tensors.values())])
    for f in fields(config):
        value = getattr(config, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, int) and not isinstance(v, bool) and v > limit:
                raise ValueError(f"{f.name} {value} is far beyond the sizes of the file's own tensors")


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
        config, notes = _config_from_dict(config_cls, json.loads(metadata[io.META_CONFIG]))
        pre_dict = json.loads(metadata.get(io.META_PREPROCESSING, "{}"))
        preprocessing = _config_from_dict(Preprocessing, pre_dict)[0] if pre_dict else default_preprocessing(
            family, config)
        names = json.loads(metadata[io.META_CLASS_NAMES]) if io.META_CLASS_NAMES in metadata else None
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError("class_names is not a list of strings")
        _check_sizes(config, tensors)
    except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError and ConfigError are ValueErrors
        raise CheckpointError(f"{path}: corrupt deit metadata ({exc}); save or download the checkpoint again") from None
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


@dataclass(frozen=True)
class Loss:
    """Something of a model that a weights-only file does not record: what a reader infers instead."""

    name: str  # a config field ("num_heads"), a preprocessing field ("crop_pct") or "class_names"
    kind: str  # "config", "preprocessing" or "class_names"
    value: Any  # the model's
    read_back: Any  # what a reader of the file infers


def _differs(presence_only: bool, value: Any, read_back: Any) -> bool:
    """Whether a reader's value of a config field changes the model (a ``presence`` field such as LayerScale's
    init_values only by whether it is set: the trained values are in the weights)."""
    if presence_only:
        return (value is None) != (read_back is None)
    return value != read_back


def weights_only_losses(model: nn.Module) -> list[Loss]:
    """What the official and timm layouts (weights only) lose of ``model``: every config field (besides training
    regularisation) and preprocessing value that reading the file back infers differently, and the class
    names. Empty when the file reads back as the same model."""
    model = unwrap_model(model)
    back = checkpoint_info(dict(model.state_dict()), "weights only")
    training = fields_with_role(model.config, "training")
    presence = fields_with_role(model.config, "presence")
    losses = [Loss(f.name, "config", getattr(model.config, f.name), getattr(back.config, f.name, None))
              for f in dataclasses.fields(model.config)
              if f.name not in training and _differs(f.name in presence, getattr(model.config, f.name),
                                                     getattr(back.config, f.name, None))]
    pre = getattr(model, "preprocessing", None) or back.preprocessing
    losses += [Loss(k, "preprocessing", v, getattr(back.preprocessing, k))
               for k, v in pre.to_dict().items() if v != getattr(back.preprocessing, k)]
    names = getattr(model, "class_names", None)
    if names:
        losses.append(Loss("class_names", "class_names", list(names), None))
    return losses


__all__ = ["CheckpointInfo", "Loss", "checkpoint_info", "read_checkpoint", "weights_only_losses"]
