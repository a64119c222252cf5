"""load_checkpoint: any supported layout in, a ready model out; or weights into a model already built."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from deit.checkpoints.errors import CheckpointError, StateDictMismatchError
from deit.checkpoints.reading import CheckpointInfo, read_checkpoint
from deit.models.contract import classifier_prefixes, state_dict_num_classes
from deit.models.pos_embed import resample_pos_embed
from deit.models.registry import apply_overrides, build_model, default_preprocessing, find_entry

logger = logging.getLogger("deit.checkpoints")


@dataclass
class LoadReport:
    info: CheckpointInfo
    changes: list[str] = field(default_factory=list)


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


# What a mismatch of a ViT's own tensors means; a classifier of any family is found through the model contract.
_HINTS = {
    "pos_embed": "the image size differs: pass img_size=... (pos_embed is resampled)",
    "dist_token": "one side is distilled and the other not: pick a *_distilled_* model for a distilled checkpoint "
    "and vice versa",
}
_CLASSIFIER_HINT = "the class count differs: pass num_classes=... (the classifier is re-initialised)"


def _hint(key: str, model: nn.Module | None = None) -> str:
    if model is not None and key.startswith(classifier_prefixes(model)):
        return f" ({_CLASSIFIER_HINT})"
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
        hint = "" if distillation_differs and k == "pos_embed" else _hint(k, model)
        if k.startswith(classifier_prefixes(model)) and _shape(state_dict[k])[1:] != _shape(own[k])[1:]:
            hint = ""  # not the class count: the features feeding the classifier differ (another architecture)
        lines.append(f"shape mismatch for {k!r}: {source} has {_shape(state_dict[k])}, the model expects "
                     f"{_shape(own[k])}{hint}")
    if len(mismatched) > limit:
        lines.append(f"{len(mismatched) - limit} more shape mismatches ({_keys(mismatched[limit:], 3)})")
    if missing:
        hint = "" if distillation_differs else _hint(missing[0], model)
        lines.append(f"missing from the {source}: {_keys(missing)}{hint}")
    if unexpected:
        hint = "" if distillation_differs else _hint(unexpected[0], model)
        lines.append(f"in the {source} but not in the model: {_keys(unexpected)}{hint}")
    raise StateDictMismatchError(f"the weights do not fit {type(model).__name__}: " + "; ".join(lines))


def _set_preprocessing(model: nn.Module, report: LoadReport, values: Mapping[str, Any]) -> None:
    """Replace preprocessing fields (what a weights-only file cannot record), each change in the report."""
    before = model.preprocessing
    valid = set(before.to_dict())
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"preprocessing has no field {', '.join(map(repr, unknown))}; valid: {sorted(valid)}")
    model.preprocessing = replace(before, **values)
    for k in values:
        old, new = getattr(before, k), getattr(model.preprocessing, k)
        if old != new:
            report.changes.append(f"preprocessing {k}: {old} -> {new}")


def _build(info: CheckpointInfo, config: Any, overrides: dict[str, Any]) -> nn.Module:
    """The model of a checkpoint's config: one the file describes (or an override asks for) but that cannot be
    built (a negative width, a size no tensor can take) is the file's or the override's fault, said as such."""
    try:
        return build_model(info.family, config, info.preprocessing)
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
        asked = f" with {', '.join(f'{k}={v!r}' for k, v in overrides.items())}" if overrides else ""
        why = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{info.source}: its {info.family} architecture{asked} cannot be built ({why}); the "
                              "file is corrupt, or the override wrong") from None


def load_checkpoint_with_report(
    path: str | os.PathLike, *, preprocessing: Mapping[str, Any] | None = None, **overrides: Any
) -> tuple[nn.Module, LoadReport]:
    info = read_checkpoint(path)
    report = LoadReport(info)
    num_classes = overrides.pop("num_classes", None)
    img_size = overrides.pop("img_size", None)
    if (num_classes is not None and num_classes < 0) or (img_size is not None and img_size < 1):
        raise ValueError(f"num_classes must be 0 or more and img_size positive, got {num_classes} and {img_size}")
    config = apply_overrides(info.config, overrides) if overrides else info.config
    for k, v in overrides.items():
        before = getattr(info.config, k)
        if before != v:
            report.changes.append(f"{k}: {before} -> {v}")
    model = _build(info, config, overrides)
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
        entry = find_entry(info.family, model.config)
        if entry is not None and info.preprocessing == default_preprocessing(info.family, info.config):
            # Nothing in the file said otherwise: the named model's own (e.g. DeiT-B at 384 px: full-image crop).
            model.preprocessing = entry.preprocessing
        what = f"resampled pos_embed {old_shape} -> {tuple(model.pos_embed.shape)} (bicubic)" if old_shape else ""
        report.changes.append(f"img_size {old} -> {img_size}: {what}")
    if preprocessing:
        _set_preprocessing(model, report, preprocessing)
    model.eval()
    return model, report


def load_checkpoint(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Load a checkpoint in any supported layout into a ready model (eval mode); no other argument needed.

    ``path``: our ``.safetensors``; an official ``{'model': ...}`` ``.pth``; a bare timm state dict (``.pth`` or
    ``.safetensors``); an OpenMMLab ``{'meta', 'state_dict'}`` file; a transformers ``save_pretrained``
    directory (legacy or 5.x names) or its bare weight file. The architecture is read from the weights.

    ``overrides``: ``num_classes`` (re-initialises both heads), ``img_size`` (resamples pos_embed), ``head_mode``,
    or any other config field (e.g. ``dynamic_img_size=True``, ``drop_path_rate``, ``num_heads``);
    ``preprocessing={"mean": ..., "std": ..., "crop_pct": ..., "interpolation": ...}`` sets what a weights-only
    file (official, timm) cannot record.
    """
    model, report = load_checkpoint_with_report(path, **overrides)
    for note in report.info.notes:
        logger.info("%s: %s", report.info.source, note)
    for change in report.changes:
        # A re-initialised head is worth seeing even without logging configured (WARNING reaches stderr).
        (logger.warning if change.startswith("num_classes") else logger.info)("%s: %s", report.info.source, change)
    return model


def load_weights_adapting(model: nn.Module, info: CheckpointInfo) -> list[str]:
    """Load a checkpoint into an already-built model of the same architecture, adapting what fine-tuning adapts:
    the classifier takes the checkpoint's class count (any family's, through the model contract; none when the
    checkpoint has no classifier), and pos_embed is resampled to the model's grid."""
    sd = dict(info.state_dict)
    changes: list[str] = []
    n_ckpt = state_dict_num_classes(model, sd) or 0
    if hasattr(model, "reset_classifier") and n_ckpt != getattr(model.config, "num_classes", n_ckpt):
        model.reset_classifier(n_ckpt)
        changes.append(f"classifier sized for the checkpoint's {n_ckpt} classes")
    same_tokens = ("dist_token" in sd) == (getattr(model, "dist_token", None) is not None)
    if "pos_embed" in sd and hasattr(model, "pos_embed") and sd["pos_embed"].shape != model.pos_embed.shape:
        cfg = model.config
        old = tuple(sd["pos_embed"].shape)
        if same_tokens and old[-1] == model.pos_embed.shape[-1]:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (cfg.grid_size, cfg.grid_size),
                                                 cfg.pos_embed_prefix_tokens)
            changes.append(f"pos_embed resampled {old} -> {tuple(sd['pos_embed'].shape)}")
    load_state_dict_strict(model, sd, f"checkpoint ({info.layout} layout)")
    if info.class_names is not None and len(info.class_names) == getattr(model.config, "num_classes", -1):
        model.class_names = list(info.class_names)
    return changes


__all__ = [
    "LoadReport",
    "load_checkpoint",
    "load_checkpoint_with_report",
    "load_state_dict_strict",
    "load_weights_adapting",
]
