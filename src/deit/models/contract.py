"""The contract every classifier in ``deit.models`` keeps, written down once, in code.

    forward_features(x) -> features (tokens after the final norm, or the last feature map)
    forward_head(features) -> logits (B, num_classes)
    forward(x) -> logits: always one tensor, whatever ``model.training`` is
    two_heads -> whether the model has a class head *and* a distillation head (a DeiT with a distillation token);
                 such a model also has forward_heads(x) -> (cls_logits, dist_logits) and a head_mode that says
                 what forward returns: "avg" (the paper's inference: the mean of the two heads), "cls" or "dist".
    classifier_prefixes -> the parameter-name prefixes of the classifier layers (("head.", "head_dist.") for a
                 DeiT, ("head.fc.",) for a RegNet, ("fc.",) for a ResNet), which reset_classifier(n) replaces
                 with fresh ones for n classes: how checkpoints read the class count of a family's weights
                 (:func:`state_dict_num_classes`) and name a head that does not fit.

Everything outside the model families asks these questions through the functions below, never by probing
attributes of its own: whether a model has two heads (:func:`has_two_heads`), what training sees
(:func:`training_outputs`), every prediction a model can make (:func:`head_outputs`) and how two heads combine
(:func:`combine_heads`). ``tests/models/test_contract.py`` checks every registered family against it.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from deit.models.preprocessing import Preprocessing

HeadMode = Literal["avg", "cls", "dist"]
HEAD_MODES: tuple[str, ...] = typing.get_args(HeadMode)
# head_outputs' key for the single prediction of a model with one head.
SINGLE_HEAD = "model"


def combine_heads(cls_logits: torch.Tensor, dist_logits: torch.Tensor, mode: str = "avg") -> torch.Tensor:
    """The prediction of a two-head model for ``mode``: the class head, the distillation head, or their mean."""
    if mode == "cls":
        return cls_logits
    if mode == "dist":
        return dist_logits
    if mode != "avg":
        raise ValueError(f"head mode {mode!r} is not one of {HEAD_MODES}")
    return (cls_logits + dist_logits) / 2


class Classifier(nn.Module, ABC):
    """Base class of every model family: the attributes checkpoints and training rely on, and the contract's
    defaults for a model with one head. Subclasses define ``forward_features`` and ``forward_head``."""

    two_heads: bool = False
    # Each family names its classifier's parameters (see the module docstring); the first prefix's "weight" is
    # (num_classes, features).
    classifier_prefixes: tuple[str, ...] = ()

    def __init__(self, config: Any, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.config = config  # a frozen dataclass: everything needed to rebuild the model
        self.preprocessing = preprocessing  # travels in every checkpoint we write
        self.class_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x``: tokens after the final norm, or the last feature map."""

    @abstractmethod
    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from ``forward_features``' output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @abstractmethod
    def reset_classifier(self, num_classes: int) -> None:
        """Fresh classifier layers (every ``classifier_prefixes`` one) for ``num_classes`` classes (0: none)."""

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError(
            f"{type(self).__name__} has one head, no distillation head; use a *_distilled_* model "
            "(e.g. deit_tiny_distilled_patch16_224) for distillation through the distillation token"
        )

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay besides biases and norms (the recipe's exemptions)."""
        return set()

    @property
    def data_init_images(self) -> int:
        """How many training images :meth:`init_from_data` wants before training's first step (0: none)."""
        return 0

    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the weights that are computed from training data (airbench's whitening conv), given
        ``data_init_images`` normalised, un-augmented training images (N, C, H, W) at the input size."""


def has_two_heads(model: nn.Module) -> bool:
    """Whether ``model`` has a class head and a distillation head. Any other module (the Python API accepts any
    images -> logits module) has one head."""
    return bool(getattr(model, "two_heads", False))


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The parameter-name prefixes of ``model``'s classifier (empty for a module outside the contract)."""
    return tuple(getattr(model, "classifier_prefixes", ()))


def state_dict_num_classes(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of ``state_dict``'s classifier, read as weights of ``model``'s family (the rows of its
    first classifier weight); None when the state dict has no classifier of that family."""
    for prefix in classifier_prefixes(model):
        weight = state_dict.get(prefix + "weight")
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            return int(weight.shape[0])
    return None


def data_init_images(model: nn.Module) -> int:
    """How many training images ``model`` wants for a data-dependent initialisation before training (0 for any
    module outside the contract)."""
    return int(model.data_init_images) if isinstance(model, Classifier) else 0


def head_mode_of(model: nn.Module) -> str:
    return getattr(model, "head_mode", "avg") if has_two_heads(model) else "avg"


def training_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the training loss sees: ``(cls_logits, dist_logits)`` of a two-head model, else ``(logits,)``."""
    if has_two_heads(model):
        return tuple(model.forward_heads(x))
    return (model(x),)


def head_names(model: nn.Module) -> tuple[str, ...]:
    """The keys of :func:`head_outputs` for ``model``."""
    return ("cls", "dist", "avg") if has_two_heads(model) else (SINGLE_HEAD,)


def head_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every prediction ``model`` can make on ``x``, as float32 logits: ``{"cls", "dist", "avg"}`` for a two-head
    model (one forward pass), else ``{"model": logits}``."""
    if has_two_heads(model):
        cls_logits, dist_logits = (o.float() for o in model.forward_heads(x))
        return {"cls": cls_logits, "dist": dist_logits, "avg": combine_heads(cls_logits, dist_logits, "avg")}
    return {SINGLE_HEAD: model(x).float()}


def prediction_key(model: nn.Module) -> str:
    """The key of :func:`head_outputs` that ``model(x)`` returns."""
    return head_mode_of(model) if has_two_heads(model) else SINGLE_HEAD


__all__ = [
    "HEAD_MODES",
    "SINGLE_HEAD",
    "Classifier",
    "HeadMode",
    "classifier_prefixes",
    "combine_heads",
    "data_init_images",
    "has_two_heads",
    "head_mode_of",
    "head_names",
    "head_outputs",
    "prediction_key",
    "state_dict_num_classes",
    "training_outputs",
]
