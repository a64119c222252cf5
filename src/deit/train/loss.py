"""Distillation through attention: the two-term loss of DeiT, wrapping any base criterion.

    loss = (1 - alpha) * base(cls_logits, target) + alpha * D(dist_logits, teacher(inputs))

* The class head gets the label (or the mixed, smoothed soft target, through the base criterion); the
  distillation head gets the teacher's output on the *same* augmented (even mixed) batch.
* ``hard``: D = CE(dist_logits, argmax teacher_logits), no label smoothing on the teacher's label.
* ``soft``: D = tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)), summed over classes and then
  - ``batchmean`` (default): averaged over the batch — the usual Hinton normalisation, whose gradient scale does not
    depend on the class count;
  - ``batch_classes``: divided by batch x classes — what the reference DeiT code does (``reduction="sum"`` then
    ``/ outputs_kd.numel()``); its values are 1/classes of the former. Use it to reproduce the paper's soft runs.
* ``token``: where the teacher term goes. ``dist`` (default): the distillation head of a model with a
  distillation token. ``cls``: the paper's "usual distillation" for a model *without* one: both terms on its single
  (class token) output, ``(1 - alpha) * base(logits, target) + alpha * D(logits, teacher)``.
* ``none``: no teacher. A model with a distillation token then trains both heads on the label,
  ``(base(cls) + base(dist)) / 2``, so its average-head prediction is meaningful; a model without one uses its
  single output.

``DistillationObjective`` computes it from the student's outputs and the teacher's logits; a run's task object
(``deit.train.task``) says where those logits come from. ``DistillationLoss`` is the official code's form, with
the teacher inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deit.inference.teacher import Teacher, as_teacher
from deit.train.config import DISTILLATION_TOKENS, DISTILLATION_TYPES, KL_NORMALISATIONS, ConfigError


def check_token(distillation_type: str, token: str, two_heads: bool, student: str = "this model") -> None:
    """The one check that the distillation token setting fits the student; raises ConfigError naming the fix."""
    if distillation_type == "none":
        return
    if token == "dist" and not two_heads:
        raise ConfigError(
            f"distillation.type={distillation_type!r} needs a student with a distillation token, and {student} has "
            "none (it is not distilled): use a *_distilled_* model (e.g. model.name=deit_tiny_distilled_patch16_224,"
            " or model.args.distilled=true), set distillation.token=cls (usual distillation into the class token), "
            "or set distillation.type=none"
        )
    if token == "cls" and two_heads:
        raise ConfigError(
            f"distillation.token=cls distils into the class token of a student without a distillation token, and "
            f"{student} has one: set model.args.distilled=false, or distillation.token=dist"
        )


def soft_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float, normalisation: str = "batchmean"):
    """tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)); see the module docstring for the normalisation."""
    if normalisation not in KL_NORMALISATIONS:
        raise ValueError(f"unknown KL normalisation {normalisation!r}; use one of {', '.join(KL_NORMALISATIONS)}")
    kl = F.kl_div(
        F.log_softmax(student.float() / tau, dim=1),
        F.log_softmax(teacher.float() / tau, dim=1),
        reduction="sum",
        log_target=True,
    )
    denom = student.shape[0] if normalisation == "batchmean" else student.numel()
    return kl * (tau * tau) / denom


class DistillationObjective(nn.Module):
    """The two-term objective on a student's outputs, given the teacher's logits (no teacher of its own: the task
    object, ``deit.train.task``, owns where teacher outputs come from).

    ``terms(outputs, target, teacher_logits)`` -> ``{"loss", "base", "distillation"}`` (scalars; "distillation" only
    when a teacher term applies); ``forward`` returns ``terms(...)["loss"]``. ``outputs`` is a tensor,
    ``(logits,)`` or ``(cls_logits, dist_logits)``.
    """

    def __init__(self, base_criterion: nn.Module, distillation_type: str = "none", alpha: float = 0.5,
                 tau: float = 1.0, kl_normalisation: str = "batchmean", token: str = "dist") -> None:
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation type {distillation_type!r} is not one of {', '.join(DISTILLATION_TYPES)}")
        if token not in DISTILLATION_TOKENS:
            raise ValueError(f"distillation token {token!r} is not one of {', '.join(DISTILLATION_TOKENS)}")
        if kl_normalisation not in KL_NORMALISATIONS:
            raise ValueError(f"unknown KL normalisation {kl_normalisation!r}; use one of "
                             f"{', '.join(KL_NORMALISATIONS)}")
        self.base_criterion = base_criterion
        self.distillation_type = distillation_type
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.kl_normalisation = kl_normalisation
        self.token = token

    @property
    def distilling(self) -> bool:
        return self.distillation_type != "none"

    def terms(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor,
              teacher_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        heads = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
        if len(heads) == 1 and not self.distilling:
            base = self.base_criterion(heads[0], target)
            return {"loss": base, "base": base.detach()}
        check_token(self.distillation_type, self.token, two_heads=len(heads) == 2)
        # Usual distillation (token=cls): the label and teacher terms on the one output.
        cls_logits, dist_logits = heads if len(heads) == 2 else (heads[0], heads[0])
        base = self.base_criterion(cls_logits, target)
        if not self.distilling:
            loss = (base + self.base_criterion(dist_logits, target)) / 2
            return {"loss": loss, "base": loss.detach()}
        if teacher_logits is None:
            raise ValueError(f"distillation type {self.distillation_type!r} needs the teacher's logits")
        teacher_logits = teacher_logits.detach()
        if self.distillation_type == "soft":
            dist = soft_distillation(dist_logits, teacher_logits, self.tau, self.kl_normalisation)
        else:
            dist = F.cross_entropy(dist_logits.float(), teacher_logits.argmax(dim=1))
        loss = (1.0 - self.alpha) * base + self.alpha * dist
        return {"loss": loss, "base": base.detach(), "distillation": dist.detach()}

    def forward(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], target: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        return self.terms(outputs, target, teacher_logits)["loss"]


class DistillationLoss(nn.Module):
    """The official ``losses.py`` signature, ``loss(inputs, outputs, target)``, with the teacher inside: for code
    that holds a teacher module next to its student (training runs use the task object instead). The teacher
    (a :class:`deit.inference.teacher.Teacher`; a plain module is wrapped, and so frozen, once) is not a
    parameter of the loss, so no optimizer, state dict or DDP wrapper ever sees it."""

    def __init__(
        self,
        base_criterion: nn.Module,
        teacher: nn.Module | Teacher | None = None,
        distillation_type: str = "none",
        alpha: float = 0.5,
        tau: float = 1.0,
        kl_normalisation: str = "batchmean",
        token: str = "dist",
    ) -> None:
        super().__init__()
        if distillation_type != "none" and teacher is None:
            raise ValueError(f"distillation type {distillation_type!r} needs a teacher")
        self.objective = DistillationObjective(base_criterion, distillation_type, alpha, tau, kl_normalisation, token)
        # Kept out of the module tree (not a submodule): never in a state dict, an optimizer or a DDP wrapper.
        self.__dict__["teacher"] = as_teacher(teacher)

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor | tuple[torch.Tensor, ...],
                target: torch.Tensor) -> torch.Tensor:
        teacher_logits = self.teacher(inputs) if self.objective.distilling else None
        return self.objective(outputs, target, teacher_logits)


__all__ = ["DistillationLoss", "DistillationObjective", "check_token", "soft_distillation"]
