"""What a field of a model config is, declared once on the field (``dataclasses.field(metadata=...)``):

- ``structure`` (the default, for a field that says nothing): it changes the architecture — which tensors a state
  dict holds and their shapes;
- ``presence``: only whether it is set is structural (LayerScale's ``init_values``: a checkpoint records the scales,
  not their initial value);
- ``training``: it only regularises training (dropout, stochastic depth); a checkpoint computes the same outputs
  without it;
- ``output``: it sizes or selects the output (class count, which head answers, inputs of other sizes) but is not
  part of what makes two models "the same architecture" when a config is matched to a named model.

The registry (``structure``, ``find_entry``) and checkpoint reading ask these functions, never a list of names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

FieldRole = Literal["structure", "presence", "training", "output"]
ROLE_KEY = "role"


def role(default: Any, field_role: FieldRole) -> Any:
    """A config field with ``default`` and its role."""
    return dataclasses.field(default=default, metadata={ROLE_KEY: field_role})


def role_of(field_: dataclasses.Field) -> str:
    return field_.metadata.get(ROLE_KEY, "structure")


def fields_with_role(config: Any, *roles: str) -> frozenset[str]:
    """The names of ``config``'s fields (an instance or a dataclass) whose role is one of ``roles``."""
    return frozenset(f.name for f in dataclasses.fields(config) if role_of(f) in roles)


def structure(config: Any) -> dict[str, Any]:
    """The fields of a config that describe the architecture: two configs with the same structure build models
    with the same state-dict keys and shapes (training and output fields left out, presence fields as set/unset)."""
    presence = fields_with_role(config, "presence")
    skipped = fields_with_role(config, "training", "output")
    return {k: (v is not None if k in presence else v)
            for k, v in dataclasses.asdict(config).items() if k not in skipped}


__all__ = ["ROLE_KEY", "FieldRole", "fields_with_role", "role", "role_of", "structure"]
