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

The teacher is frozen (``requires_grad=False``), in eval mode, run under ``torch.no_grad``, optionally in its own
dtype, and it is not a parameter of the student, so no optimizer ever sees it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def freeze_teacher(teacher: nn.Module, dtype: str | torch.dtype | None = None) -> nn.Module:
    """Eval mode, no gradients, optionally cast to ``dtype``."""
    if isinstance(dtype, str):
        dtype = _DTYPES[dtype]
    if dtype is not None:
        teacher = teacher.to(dtype=dtype)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def soft_distillation(student: torch.Tensor, teacher: torch.Tensor, tau: float, normalisation: str = "batchmean"):
    """tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)); see the module docstring for the normalisation."""
    kl = F.kl_div(
        F.log_softmax(student.float() / tau, dim=1),
        F.log_softmax(teacher.float() / tau, dim=1),
        reduction="sum",
        log_target=True,
    )
    if normalisation == "batchmean":
        denom = student.shape[0]
    elif normalisation == "batch_classes":
        denom = student.numel()
    else:
        raise ValueError(f"unknown KL normalisation {normalisation!r}; use batchmean or batch_classes")
    return kl * (tau * tau) / denom


class DistillationLoss(nn.Module):
    """``loss(inputs, outputs, target)`` for any student output: a tensor, or (cls_logits, dist_logits)."""

    def __init__(
        self,
        base_criterion: nn.Module,
        teacher: nn.Module | None = None,
        distillation_type: str = "none",
        alpha: float = 0.5,
        tau: float = 1.0,
        kl_normalisation: str = "batchmean",
        teacher_dtype: str | torch.dtype | None = None,
        token: str = "dist",
    ) -> None:
        super().__init__()
        if distillation_type not in ("none", "soft", "hard"):
            raise ValueError(f"distillation type {distillation_type!r} is not one of none, soft, hard")
        if token not in ("dist", "cls"):
            raise ValueError(f"distillation token {token!r} is not one of dist, cls")
        if distillation_type != "none" and teacher is None:
            raise ValueError(f"distillation type {distillation_type!r} needs a teacher")
        self.base_criterion = base_criterion
        self.distillation_type = distillation_type
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.kl_normalisation = kl_normalisation
        self.token = token
        # Kept out of the module tree (not a submodule): never in a state dict, an optimizer or a DDP wrapper.
        self.__dict__["teacher"] = freeze_teacher(teacher, teacher_dtype) if teacher is not None else None

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits on ``inputs`` (in float32), computed in the teacher's own dtype."""
        teacher = self.teacher
        if teacher is None:
            raise ValueError("this loss has no teacher")
        teacher.eval()
        dtype = next(teacher.parameters()).dtype
        # The teacher runs in its own dtype, outside any autocast the student uses.
        with torch.autocast(inputs.device.type, enabled=False):
            out = teacher(inputs.to(dtype))
        if isinstance(out, (tuple, list)):
            out = (out[0] + out[1]) / 2
        return out.float()

    def forward(
        self,
        inputs: torch.Tensor,
        outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            if self.distillation_type == "none":
                return self.base_criterion(outputs, target)
            if self.token != "cls":
                raise ValueError(
                    "distillation needs a model with a distillation token (two outputs), got one output; "
                    "use a *_distilled_* model (e.g. deit_tiny_distilled_patch16_224), distillation.token=cls "
                    "(usual distillation into the class token), or distillation.type=none"
                )
            outputs = (outputs, outputs)  # usual distillation: label and teacher terms on the one output
        elif self.token == "cls" and self.distillation_type != "none":
            raise ValueError(
                "distillation.token=cls is for a model without a distillation token, and this one has one: "
                "use distillation.token=dist, or a student without it (model.args.distilled=false)"
            )
        cls_logits, dist_logits = outputs
        base = self.base_criterion(cls_logits, target)
        if self.distillation_type == "none":
            return (base + self.base_criterion(dist_logits, target)) / 2
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(inputs)
        teacher_logits = teacher_logits.detach()
        if self.distillation_type == "soft":
            dist = soft_distillation(dist_logits, teacher_logits, self.tau, self.kl_normalisation)
        else:
            dist = F.cross_entropy(dist_logits.float(), teacher_logits.argmax(dim=1))
        return (1.0 - self.alpha) * base + self.alpha * dist


__all__ = ["DistillationLoss", "freeze_teacher", "soft_distillation"]
