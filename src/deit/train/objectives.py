"""Base objectives by name: what ``loss.name`` trains the class head on (and every head when there is no teacher).

An objective is a criterion ``(logits, target) -> scalar loss``, built for a run by its builder from an
:class:`ObjectiveSpec` (class count, label smoothing, and whether targets arrive as class indices or as the
(B, classes) soft targets mixup/cutmix produce). The distillation term composes on top of any of them
(``deit.train.loss.DistillationObjective``), so a new objective never touches distillation, the task or the loop.

    from deit.train import register_objective
    register_objective("focal", lambda spec: MyFocalLoss(spec.num_classes))   # then loss.name=focal

Built in: ``cross_entropy`` (hard labels with label smoothing, or mixup's soft targets) and ``bce`` (DeiT III:
binary cross-entropy on every class, mixup's soft targets binarised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ObjectiveSpec:
    """What a run tells an objective builder."""

    num_classes: int
    smoothing: float  # data.smoothing; mixup has already folded it into soft targets
    soft_targets: bool  # targets are (B, num_classes) probabilities (mixup/cutmix on), else class indices


ObjectiveBuilder = Callable[[ObjectiveSpec], nn.Module]
_OBJECTIVES: dict[str, ObjectiveBuilder] = {}


def register_objective(name: str, builder: ObjectiveBuilder, *, replace: bool = False) -> None:
    """Make ``loss.name=<name>`` build ``builder(spec)``; registering a taken name needs ``replace=True``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"an objective name is a non-empty string, got {name!r}")
    if name in _OBJECTIVES and not replace:
        raise ValueError(f"objective {name!r} is registered already (pass replace=True to redefine it)")
    _OBJECTIVES[name] = builder


def objective_names() -> tuple[str, ...]:
    return tuple(_OBJECTIVES)


def check_objective(name: str, smoothing: float = 0.0) -> None:
    """``name`` is a registered objective, else a ValueError listing them; and a built-in one accepts the label
    smoothing (``data.smoothing``), else a ValueError naming the fix."""
    if name not in _OBJECTIVES:
        raise ValueError(f"loss.name={name!r} is not a registered objective; known: {', '.join(_OBJECTIVES)} "
                         "(a new one: deit.train.register_objective(name, builder))")
    if _OBJECTIVES[name] is _bce and smoothing > 0:
        # Smoothing puts smoothing/C on every class, which the binarisation turns into all-ones targets (what the
        # official code would silently train on): refused rather than reproduced.
        raise ValueError(f"loss.name=bce binarises the targets (target > 0, as DeiT III does), which turns label "
                         f"smoothing ({smoothing}) into a positive label on every class: set data.smoothing=0")


def build_objective(name: str, spec: ObjectiveSpec) -> nn.Module:
    check_objective(name)
    return _OBJECTIVES[name](spec)


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against (B, C) target probabilities (mixup/cutmix targets, smoothing folded in)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def _cross_entropy(spec: ObjectiveSpec) -> nn.Module:
    return SoftTargetCrossEntropy() if spec.soft_targets else nn.CrossEntropyLoss(label_smoothing=spec.smoothing)


class BinaryTargetBCE(nn.Module):
    """DeiT III's objective: ``BCEWithLogits`` on (B, C) logits, averaged over batch and classes, against binary
    targets. Soft (B, C) targets — mixup/cutmix's — are binarised with ``target > 0`` as the official engine does
    (``targets.gt(0.0)`` after mixup): every class with a share of the image, however small, is a positive. Class
    indices (mixup and cutmix off) become one-hot rows; the official code has no such path (its BCE fails on
    index targets)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        binary = F.one_hot(target.long(), self.num_classes) if target.ndim == 1 else target.gt(0.0)
        return F.binary_cross_entropy_with_logits(logits.float(), binary.to(torch.float32))


def _bce(spec: ObjectiveSpec) -> nn.Module:
    check_objective("bce", spec.smoothing)
    return BinaryTargetBCE(spec.num_classes)


register_objective("cross_entropy", _cross_entropy)
register_objective("bce", _bce)


__all__ = [
    "BinaryTargetBCE",
    "ObjectiveBuilder",
    "ObjectiveSpec",
    "SoftTargetCrossEntropy",
    "build_objective",
    "check_objective",
    "objective_names",
    "register_objective",
]
