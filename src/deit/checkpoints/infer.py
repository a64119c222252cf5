"""Architecture from weights: which family a canonical state dict belongs to, and its config.

Each family reads its own config from the weights (``Family.infer_config``, beside the family's code:
``deit.models.vit_config.infer_config``, ``resnet.infer_config``, ``regnet.infer_config``); this module asks every
registered family in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from deit.checkpoints.errors import UnknownLayoutError
from deit.checkpoints.layouts import LAYOUT_HELP, key_prefixes
from deit.models.registry import families


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
    raise UnknownLayoutError(
        f"cannot recognise this checkpoint: read as {layout} keys, it matches no architecture family "
        f"({', '.join(known)}){extra}. Key prefixes seen: {key_prefixes(state_dict)}. {LAYOUT_HELP}."
    )
