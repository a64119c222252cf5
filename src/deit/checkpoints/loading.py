"""load_checkpoint / save_checkpoint: any supported layout in, a ready model (or our .safetensors) out."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deit.checkpoints import io
from deit.checkpoints.errors import CheckpointError, StateDictMismatchError
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
from deit.models.pos_embed import resample_pos_embed
from deit.models.preprocessing import Preprocessing
from deit.models.registry import ModelEntry

logger = logging.getLogger("deit.checkpoints")

# Config fields that do not describe the architecture: ignored when matching a checkpoint to a named model.
_NON_STRUCTURAL = {"num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate", "head_mode", "dynamic_img_size"}


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
            )
        else:
            arch = f"{self.family} {cfg}"
        name = f" = {self.architecture}" if self.architecture else ""
        return f"layout {self.layout}; {arch}{name}"


@dataclass
class LoadReport:
    info: CheckpointInfo
    changes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ helpers
def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def family_of(config: Any) -> str:
    from deit.models.registry import FAMILIES

    for name, fam in FAMILIES.items():
        if type(config) is fam.config_cls:
            return name
    raise ValueError(
        f"no registered architecture family has config class {type(config).__name__}; "
        f"known families: {sorted(FAMILIES)}"
    )


def matching_entry(family: str, config: Any) -> ModelEntry | None:
    """The registered model with this architecture (ignoring class count, dropout and head mode), or None."""
    from deit.models.registry import _MODELS

    if not dataclasses.is_dataclass(config):
        return None
    want = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NON_STRUCTURAL}
    for entry in _MODELS.values():
        if entry.family != family or type(entry.config) is not type(config):
            continue
        have = {k: v for k, v in dataclasses.asdict(entry.config).items() if k not in _NON_STRUCTURAL}
        if have == want:
            return entry
    return None


def default_preprocessing(family: str, config: Any) -> Preprocessing:
    entry = matching_entry(family, config)
    if entry is not None:
        return entry.preprocessing
    size = getattr(config, "img_size", 224)
    # The paper's eval transform: resize to size / 0.875 then centre-crop at 224; the 384 px models use the full image.
    return Preprocessing(input_size=size, crop_pct=0.875 if size < 384 else 1.0)


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


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


_HINTS = {
    "head.": "the class count differs: pass num_classes=... (both heads are re-initialised)",
    "head_dist.": "the class count differs: pass num_classes=... (both heads are re-initialised)",
    "pos_embed": "the image size differs: pass img_size=... (pos_embed is resampled)",
    "dist_token": "one side is distilled and the other not: pick a *_distilled_* model for a distilled checkpoint "
    "and vice versa",
}


def _hint(key: str) -> str:
    for prefix, hint in _HINTS.items():
        if key.startswith(prefix):
            return f" ({hint})"
    return ""


def _keys(keys: list[str], limit: int = 8) -> str:
    return ", ".join(repr(k) for k in keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load every tensor, or fail naming the missing keys, extra keys and shape mismatches (with both shapes)."""
    own = model.state_dict()
    # BatchNorm's step counter is not a weight; files written by other frameworks often lack it.
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in own if k in state_dict and _shape(state_dict[k]) != _shape(own[k])]
    if not (missing or unexpected or mismatched):
        filled = {k: v for k, v in own.items() if k not in state_dict}
        model.load_state_dict({**filled, **state_dict}, strict=True)
        return
    lines = []
    distillation_differs = ("dist_token" in own) != ("dist_token" in state_dict)
    if distillation_differs:
        which = "is distilled (it has dist_token) and the model is not" if "dist_token" in state_dict else (
            "is not distilled (no dist_token) and the model is"
        )
        lines.append(f"the {source} {which}{_hint('dist_token')}")
    limit = 4
    for k in mismatched[:limit]:
        hint = "" if distillation_differs and k == "pos_embed" else _hint(k)
        lines.append(f"shape mismatch for {k!r}: {source} has {_shape(state_dict[k])}, the model expects "
                     f"{_shape(own[k])}{hint}")
    if len(mismatched) > limit:
        lines.append(f"{len(mismatched) - limit} more shape mismatches ({_keys(mismatched[limit:], 3)})")
    if missing:
        hint = "" if distillation_differs else _hint(missing[0])
        lines.append(f"missing from the {source}: {_keys(missing)}{hint}")
    if unexpected:
        hint = "" if distillation_differs else _hint(unexpected[0])
        lines.append(f"in the {source} but not in the model: {_keys(unexpected)}{hint}")
    raise StateDictMismatchError(f"the weights do not fit {type(model).__name__}: " + "; ".join(lines))


# ------------------------------------------------------------------------------------------------------ reading
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
    entry = matching_entry(family, config)
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
    from deit.models.registry import FAMILIES

    family = metadata.get(io.META_FAMILY, "vit")
    if family not in FAMILIES:
        raise CheckpointError(
            f"{path}: written for architecture family {family!r}, which this installation does not have "
            f"(known: {sorted(FAMILIES)})"
        )
    try:
        config_dict = json.loads(metadata[io.META_CONFIG])
        pre_dict = json.loads(metadata.get(io.META_PREPROCESSING, "{}"))
        names = json.loads(metadata[io.META_CLASS_NAMES]) if io.META_CLASS_NAMES in metadata else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt deit metadata ({exc})") from None
    config, notes = _config_from_dict(FAMILIES[family].config_cls, config_dict)
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


# ------------------------------------------------------------------------------------------------------ loading
def load_checkpoint_with_report(path: str | os.PathLike, **overrides: Any) -> tuple[nn.Module, LoadReport]:
    from deit.models.registry import apply_overrides, build_model

    info = read_checkpoint(path)
    report = LoadReport(info)
    num_classes = overrides.pop("num_classes", None)
    img_size = overrides.pop("img_size", None)
    config = apply_overrides(info.config, overrides) if overrides else info.config
    for k, v in overrides.items():
        before = getattr(info.config, k)
        if before != v:
            report.changes.append(f"{k}: {before} -> {v}")
    model = build_model(info.family, config, info.preprocessing)
    load_state_dict_strict(model, info.state_dict, f"checkpoint ({info.layout} layout)")
    if info.class_names is not None and len(info.class_names) == getattr(config, "num_classes", -1):
        model.class_names = list(info.class_names)
    if num_classes is not None and num_classes != getattr(model.config, "num_classes", None):
        if not hasattr(model, "reset_classifier"):
            raise ValueError(f"{type(model).__name__} cannot change its number of classes")
        old = model.config.num_classes
        had_names = getattr(model, "class_names", None) is not None
        model.reset_classifier(num_classes)
        heads = "head and head_dist" if getattr(model.config, "distilled", False) else "the head"
        msg = f"num_classes {old} -> {num_classes}: re-initialised {heads}"
        report.changes.append(msg + ("; the checkpoint's class names no longer apply" if had_names else ""))
    if img_size is not None and img_size != getattr(model.config, "img_size", None):
        if not hasattr(model, "set_img_size"):
            raise ValueError(f"{type(model).__name__} has no image size to change")
        old_shape = tuple(model.pos_embed.shape) if hasattr(model, "pos_embed") else None
        old = model.config.img_size
        model.set_img_size(img_size)
        entry = matching_entry(info.family, model.config)
        if entry is not None and info.preprocessing == default_preprocessing(info.family, info.config):
            # Nothing in the file said otherwise: the named model's own (e.g. DeiT-B at 384 px: full-image crop).
            model.preprocessing = entry.preprocessing
        what = f"resampled pos_embed {old_shape} -> {tuple(model.pos_embed.shape)} (bicubic)" if old_shape else ""
        report.changes.append(f"img_size {old} -> {img_size}: {what}")
    model.eval()
    return model, report


def load_checkpoint(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Load a checkpoint in any supported layout into a ready model (eval mode); no other argument needed.

    ``path``: our ``.safetensors``; an official ``{'model': ...}`` ``.pth``; a bare timm state dict (``.pth`` or
    ``.safetensors``); an OpenMMLab ``{'meta', 'state_dict'}`` file; a transformers ``save_pretrained``
    directory (legacy or 5.x names) or its bare weight file. The architecture is read from the weights.

    ``overrides``: ``num_classes`` (re-initialises both heads), ``img_size`` (resamples pos_embed), ``head_mode``,
    or any other config field (e.g. ``dynamic_img_size=True``, ``drop_path_rate``, ``num_heads``).
    """
    model, report = load_checkpoint_with_report(path, **overrides)
    for note in report.info.notes:
        logger.info("%s: %s", report.info.source, note)
    for change in report.changes:
        # A re-initialised head is worth seeing even without logging configured (WARNING reaches stderr).
        (logger.warning if change.startswith("num_classes") else logger.info)("%s: %s", report.info.source, change)
    return model


# ------------------------------------------------------------------------------------------------------ writing
def checkpoint_metadata(model: nn.Module, extra_metadata: dict[str, Any] | None = None) -> dict[str, str]:
    model = unwrap_model(model)
    cfg = getattr(model, "config", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise ValueError(f"{type(model).__name__} has no dataclass .config: save_checkpoint needs a deit model")
    family = family_of(cfg)
    pre = getattr(model, "preprocessing", None) or default_preprocessing(family, cfg)
    entry = matching_entry(family, cfg)
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


def save_official(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``{'model': state_dict}`` in the official / timm key layout (a plain-tensor pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    torch.save({"model": sd}, path)
    return path


# ------------------------------------------------------------------------------------------ into an existing model
def load_weights_adapting(model: nn.Module, info: CheckpointInfo) -> list[str]:
    """Load a checkpoint into an already-built model of the same architecture, adapting what fine-tuning adapts:
    the heads take the checkpoint's class count, and pos_embed is resampled to the model's grid."""
    sd = dict(info.state_dict)
    changes: list[str] = []
    head = sd.get("head.weight")
    n_ckpt = int(head.shape[0]) if head is not None else 0
    if hasattr(model, "reset_classifier") and n_ckpt != getattr(model.config, "num_classes", n_ckpt):
        model.reset_classifier(n_ckpt)
        changes.append(f"heads sized for the checkpoint's {n_ckpt} classes")
    same_tokens = ("dist_token" in sd) == (getattr(model, "dist_token", None) is not None)
    if "pos_embed" in sd and hasattr(model, "pos_embed") and sd["pos_embed"].shape != model.pos_embed.shape:
        cfg = model.config
        old = tuple(sd["pos_embed"].shape)
        if same_tokens and old[-1] == model.pos_embed.shape[-1]:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (cfg.grid_size, cfg.grid_size), cfg.num_prefix_tokens)
            changes.append(f"pos_embed resampled {old} -> {tuple(sd['pos_embed'].shape)}")
    load_state_dict_strict(model, sd, f"checkpoint ({info.layout} layout)")
    if info.class_names is not None and len(info.class_names) == getattr(model.config, "num_classes", -1):
        model.class_names = list(info.class_names)
    return changes
