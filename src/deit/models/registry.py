"""Named models: one table from names (and aliases) to an architecture family, its config and preprocessing.

The public lookups here are how the rest of the package asks about models: :func:`get_entry` (a name),
:func:`get_family` (a family name), :func:`family_of` (a config object), :func:`find_entry` (the registered
model with a given architecture), :func:`families` (every family, for weight-based detection). Building a model
with weights (``pretrained=``) is ``deit.create_model``: weights are the checkpoints package's business.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

from deit.models.fields import structure
from deit.models.preprocessing import Preprocessing, default_crop_pct


@dataclass(frozen=True)
class Family:
    """An architecture family: its config dataclass and the nn.Module built from it."""

    name: str
    config_cls: type
    build: Callable[[Any, Preprocessing], nn.Module]
    # Given a canonical-layout state dict, return this family's config if the keys are this family's, else None;
    # raise ValueError naming the reason when the keys are this family's but fit no config (checkpoints/infer.py
    # puts it in its "matches no architecture family" message). Lets checkpoint loading detect the architecture
    # of a foreign file without being told.
    infer_config: Callable[[dict], Any | None] | None = None
    # What the family is, in words, for messages ("closest: vit (DeiT / DeiT III ViT) ...").
    title: str = ""
    # Config fields the weights cannot tell (the ViT's head count): a reader of a weights-only file takes them from
    # the registered model whose weights look the same (``find_entry(..., ignoring=family.unrecorded)``).
    unrecorded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    """A further set of released weights of a named model, picked with timm's ``name.tag`` syntax
    (``deit3_small_patch16_224.fb_in22k_ft_in1k``)."""

    tag: str
    url: str
    crop_pct: float | None = None  # its evaluation crop, where it differs from the model's
    description: str = ""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    config: Any
    preprocessing: Preprocessing
    aliases: tuple[str, ...] = ()
    # The default release. A file name with 8+ hex digits before the suffix carries its sha256 prefix, checked on
    # every load; a name without them has no published digest (trust on first use: checkpoints/pretrained.py).
    pretrained_url: str | None = None
    description: str = ""
    default_tag: str | None = None  # the tag of pretrained_url (timm's, e.g. "fb_in1k")
    releases: tuple[Release, ...] = ()  # the other releases, by tag

    @property
    def tags(self) -> tuple[str, ...]:
        """Every release tag, the default first."""
        return (*((self.default_tag,) if self.default_tag else ()), *(r.tag for r in self.releases))

    def with_release(self, tag: str) -> ModelEntry:
        """This model with the release ``tag`` as its pretrained weights (and that release's evaluation crop)."""
        if tag == self.default_tag:
            return self
        for r in self.releases:
            if r.tag == tag:
                pre = self.preprocessing if r.crop_pct is None else replace(self.preprocessing, crop_pct=r.crop_pct)
                return replace(self, pretrained_url=r.url, preprocessing=pre, default_tag=tag, releases=(),
                               description=r.description or self.description)
        known = ", ".join(self.tags) or "none (it has no released weights)"
        raise ValueError(f"{self.name} has no release tagged {tag!r}; its tags: {known}")


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


# ------------------------------------------------------------------------------------------------------ lookups
def list_models(family: str | None = None) -> list[str]:
    return [n for n, e in _MODELS.items() if family is None or e.family == family]


def get_entry(name: str) -> ModelEntry:
    """The registered model of a name or alias; ``name.tag`` picks one of its releases (timm's pretrained tags)."""
    base, dot, tag = name.partition(".")
    if dot and (base in _MODELS or base in _ALIASES):
        return get_entry(base).with_release(tag)
    canonical = _ALIASES.get(name, name)
    if canonical not in _MODELS:
        known = [*_MODELS, *_ALIASES]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see deit.list_models() or `deit info --list`)")
    return _MODELS[canonical]


def families() -> list[Family]:
    """Every registered family, in registration order."""
    return list(FAMILIES.values())


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown architecture family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(config: Any) -> str:
    """The name of the family whose config class ``config`` is."""
    for name, fam in FAMILIES.items():
        if type(config) is fam.config_cls:
            return name
    raise ValueError(
        f"no registered architecture family has config class {type(config).__name__}; "
        f"known families: {sorted(FAMILIES)}"
    )


def find_entry(family: str, config: Any, ignoring: tuple[str, ...] = ()) -> ModelEntry | None:
    """The registered model with this architecture (ignoring class count, dropout and head mode, and the fields
    named in ``ignoring``), or None."""
    if not dataclasses.is_dataclass(config):
        return None
    want = {k: v for k, v in structure(config).items() if k not in ignoring}
    for entry in _MODELS.values():
        if entry.family != family or type(entry.config) is not type(config):
            continue
        if {k: v for k, v in structure(entry.config).items() if k not in ignoring} == want:
            return entry
    return None


def describe_model(config: Any, made_from: str | None = None) -> str:
    """What an architecture is, in words: the registered model it is (``deit_small_patch16_224``), else its shape
    (the config's ``describe()``, or its family and structural fields) and, when given, the registered name
    ``made_from`` it was built from with overrides. Raises ValueError for a config of no registered family."""
    family = family_of(config)
    entry = find_entry(family, config)
    if entry is not None:
        return entry.name
    describe = getattr(config, "describe", None)
    if callable(describe):
        shape = describe()
    else:
        shape = f"{family} " + ", ".join(f"{k} {v}" for k, v in structure(config).items())
    base = _MODELS.get(_ALIASES.get(made_from, made_from)) if made_from else None
    return f"{shape} ({base.name} with overrides)" if base is not None and base.family == family else shape


def default_preprocessing(family: str, config: Any) -> Preprocessing:
    """The named model's preprocessing for this architecture, else the paper's rule for its input size."""
    entry = find_entry(family, config)
    if entry is not None:
        return entry.preprocessing
    size = getattr(config, "img_size", 224)
    return Preprocessing(input_size=size, crop_pct=default_crop_pct(size))


# ----------------------------------------------------------------------------------------------------- building
def build_model(family: str, config: Any, preprocessing: Preprocessing | None = None) -> nn.Module:
    fam = get_family(family)
    return fam.build(config, preprocessing or default_preprocessing(family, config))


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Replace config fields by name; an unknown field is an error naming the nearest valid one."""
    valid = {f.name for f in fields(config)}
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{type(config).__name__} has no field {key!r}{hint}; valid fields: {sorted(valid)}")
    return replace(config, **overrides)


def build_architecture(
    name: str,
    *,
    num_classes: int | None = None,
    img_size: int | None = None,
    drop_path_rate: float | None = None,
    **config_overrides: Any,
) -> nn.Module:
    """Build a named architecture with fresh weights; ``config_overrides`` set any other field of its config
    (e.g. ``head_mode``, ``depth``). For release or local weights use ``deit.create_model(..., pretrained=...)``.
    """
    if "pretrained" in config_overrides:
        raise TypeError("deit.models.build_architecture builds architectures only; load weights with "
                        "deit.create_model(name, pretrained=True or a path)")
    entry = get_entry(name)
    overrides = dict(config_overrides)
    if drop_path_rate is not None:
        overrides["drop_path_rate"] = drop_path_rate
    final: dict[str, Any] = {}
    if num_classes is not None:
        final["num_classes"] = num_classes
    has_img_size = any(f.name == "img_size" for f in fields(entry.config))
    if img_size is not None and has_img_size:
        final["img_size"] = img_size
    config = replace(apply_overrides(entry.config, overrides), **final)
    size = img_size if img_size is not None else entry.preprocessing.input_size
    return build_model(entry.family, config, replace(entry.preprocessing, input_size=size))


__all__ = [
    "FAMILIES",
    "Family",
    "ModelEntry",
    "Release",
    "apply_overrides",
    "build_model",
    "build_architecture",
    "default_preprocessing",
    "describe_model",
    "families",
    "family_of",
    "find_entry",
    "get_entry",
    "get_family",
    "list_models",
    "register_family",
    "register_model",
    "structure",
]
