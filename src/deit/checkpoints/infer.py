"""Architecture from weights: which family a canonical state dict belongs to, and its config.

Each family reads its own config from the weights (``Family.infer_config``, beside the family's code:
``deit.models.vit_config.infer_config``, ``resnet.infer_config``, ``regnet.infer_config``); this module asks every
registered family in turn. Weights no family reads are compared with every registered model's keys, and the
refusal names the closest model, its family and what differs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import torch

from deit.checkpoints.errors import UnknownLayoutError
from deit.checkpoints.layouts import LAYOUT_HELP, key_prefixes
from deit.models.registry import build_architecture, families, get_entry, get_family, list_models, structure


def infer_architecture(state_dict: Mapping[str, torch.Tensor], layout: str = "timm") -> tuple[str, Any]:
    """(family name, config) of the first registered family whose ``infer_config`` accepts these keys."""
    problems: list[str] = []
    readers = [f for f in families() if f.infer_config is not None]
    for family in readers:
        try:
            config = family.infer_config(state_dict)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            problems.append(f"{family.name}: {exc}")
            continue
        if config is not None:
            return family.name, config
    known = [f.name for f in readers]
    extra = f" ({'; '.join(problems)})" if problems else ""
    closest = closest_model(state_dict)
    raise UnknownLayoutError(
        f"cannot recognise this checkpoint: read as {layout} keys, it matches no architecture family "
        f"({', '.join(known)}){extra}. {closest + '. ' if closest else ''}Key prefixes seen: "
        f"{key_prefixes(state_dict)}. {LAYOUT_HELP}."
    )


_BLOCK_NUMBER = re.compile(r"\.\d+(?=\.|$)")


def _kind(key: str) -> str:
    """A key with its block numbers folded (``blocks.3.attn.qkv.weight`` -> ``blocks.{i}.attn.qkv.weight``): models
    of another depth still share their kinds of keys."""
    return _BLOCK_NUMBER.sub(".{i}", key)


def _weights(keys: Mapping[str, Any] | list[str]) -> list[str]:
    return [k for k in keys if not k.endswith("num_batches_tracked")]  # BatchNorm's counter is not a weight


def _sizeless(value: Any) -> Any:
    """A config value with its sizes blanked: widths, depths and ratios change the shapes of a model's keys, not
    their kinds; flags, names and presence (a LayerScale, a distillation token, a stem kind) do."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, tuple) and any(v is None or isinstance(v, (bool, str)) for v in value):
        return tuple(_sizeless(v) for v in value)
    return "size" if isinstance(value, (int, float, tuple)) else value


@functools.lru_cache(maxsize=1)
def _kinds_of_models() -> tuple[tuple[str, frozenset[str]], ...]:
    """(a registered model, the kinds of its keys) for one model of each kind: building each on the meta device
    costs a tenth of a second or more, and models that differ in sizes only have the same kinds of keys."""
    seen: dict[tuple, tuple[str, frozenset[str]]] = {}
    for name in list_models():
        entry = get_entry(name)
        signature = (entry.family, *sorted((k, repr(_sizeless(v))) for k, v in structure(entry.config).items()))
        if signature not in seen:
            with torch.device("meta"):  # shapes only: nothing allocated
                model = build_architecture(name)
            seen[signature] = (name, frozenset(_kind(k) for k in _weights(list(model.state_dict()))))
    return tuple(seen.values())


def closest_model(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which registered model (and family) these weights are closest to, by the kinds of keys they share, and what
    differs: ``closest: vit (DeiT / DeiT III ViT), like deit3_small_patch16_224: 150 of 152 keys match; missing:
    cls_token; unexpected: reg_token``. None when they share no kind of key with any registered model."""
    keys = _weights(list(state_dict))
    kinds = {_kind(k) for k in keys}
    best: tuple[float, str, frozenset[str]] | None = None
    for name, theirs in _kinds_of_models():
        score = len(kinds & theirs) / max(len(kinds | theirs), 1)
        if score > 0 and (best is None or score > best[0]):
            best = (score, name, theirs)
    if best is None:
        return None
    _, name, theirs = best
    family = get_family(get_entry(name).family)
    matched = sum(_kind(k) in theirs for k in keys)
    return (f"closest: {family.name} ({family.title or family.name}), like {name}: {matched} of {len(keys)} keys "
            f"match; missing: {_listed(theirs - kinds)}; unexpected: {_listed(kinds - theirs)}")


def _listed(kinds: set[str] | frozenset[str], limit: int = 6) -> str:
    shown = sorted(kinds)[:limit]
    return (", ".join(shown) + (f" and {len(kinds) - limit} more" if len(kinds) > limit else "")) or "none"


__all__ = ["closest_model", "infer_architecture"]
