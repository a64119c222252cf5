"""Named models: one table from names (and aliases) to an architecture family, its config and preprocessing."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

from deit.models.preprocessing import Preprocessing


@dataclass(frozen=True)
class Family:
    """An architecture family: its config dataclass and the nn.Module built from it."""

    name: str
    config_cls: type
    build: Callable[[Any, Preprocessing], nn.Module]
    # Given a canonical-layout state dict, return this family's config if the keys are this family's, else None.
    # Lets checkpoint loading detect the architecture of a foreign file without being told.
    infer_config: Callable[[dict], Any | None] | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    config: Any
    preprocessing: Preprocessing
    aliases: tuple[str, ...] = ()
    pretrained_url: str | None = None  # the file name's 8 hex digits are its sha256 prefix
    description: str = ""


FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def register_model(entry: ModelEntry) -> ModelEntry:
    for key in (entry.name, *entry.aliases):
        if key in _MODELS or key in _ALIASES:
            raise ValueError(f"model name {key!r} is registered twice")
    _MODELS[entry.name] = entry
    for alias in entry.aliases:
        _ALIASES[alias] = entry.name
    return entry


def list_models(family: str | None = None) -> list[str]:
    return [n for n, e in _MODELS.items() if family is None or e.family == family]


def get_entry(name: str) -> ModelEntry:
    canonical = _ALIASES.get(name, name)
    if canonical not in _MODELS:
        known = [*_MODELS, *_ALIASES]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see deit.list_models() or `deit info --list`)")
    return _MODELS[canonical]


def build_model(family: str, config: Any, preprocessing: Preprocessing | None = None) -> nn.Module:
    if family not in FAMILIES:
        raise ValueError(f"unknown architecture family {family!r}; known: {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    if preprocessing is None:
        preprocessing = Preprocessing(input_size=getattr(config, "img_size", 224))
    return fam.build(config, preprocessing)


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Replace config fields by name; an unknown field is an error naming the nearest valid one."""
    valid = {f.name for f in fields(config)}
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{type(config).__name__} has no field {key!r}{hint}; valid fields: {sorted(valid)}")
    return replace(config, **overrides)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    img_size: int | None = None,
    drop_path_rate: float | None = None,
    pretrained: bool | str = False,
    **config_overrides: Any,
) -> nn.Module:
    """Build a named model; ``config_overrides`` set any other field of its config (e.g. ``head_mode``, ``depth``).

    ``pretrained=True`` loads the official release weights (downloaded once into the torch hub cache and checked
    against their sha256 prefix); a string loads weights from that local file in any supported layout. Weights
    for another class count or image size are adapted: heads re-initialised, pos_embed resampled.
    """
    entry = get_entry(name)
    overrides = dict(config_overrides)
    if drop_path_rate is not None:
        overrides["drop_path_rate"] = drop_path_rate
    base = apply_overrides(entry.config, overrides)
    has_img_size = any(f.name == "img_size" for f in fields(base))
    if pretrained:
        # Build at the checkpoint's native size and class count, load, then adapt: the same path as fine-tuning.
        model = build_model(entry.family, base, entry.preprocessing)
        from deit.checkpoints.pretrained import load_pretrained_weights

        load_pretrained_weights(model, entry, pretrained)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        if img_size is not None and has_img_size and img_size != base.img_size:
            model.set_img_size(img_size)
        return model
    final: dict[str, Any] = {}
    if num_classes is not None:
        final["num_classes"] = num_classes
    if img_size is not None and has_img_size:
        final["img_size"] = img_size
    config = replace(base, **final)
    size = img_size if img_size is not None else entry.preprocessing.input_size
    return build_model(entry.family, config, replace(entry.preprocessing, input_size=size))
