"""A frozen teacher, as one callable: a batch of the student's inputs in, float32 logits out.

:class:`Teacher` owns what running a teacher means: eval mode and no gradients (so BatchNorm statistics never
move and no optimizer or DDP wrapper ever sees its weights), its own dtype, outside any autocast the student
uses. Training (the distillation loss), evaluation (agreement with the teacher) and ``deit eval --teacher`` only
ever call it. ``logits(inputs, epoch, batch)`` is the interface of every teacher source of a training run: a
live teacher ignores the stream position, a teacher-output cache reads by it.
"""

from __future__ import annotations

import torch
from torch import nn

from deit.models.contract import combine_heads

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def freeze(module: nn.Module, dtype: str | torch.dtype | None = None) -> nn.Module:
    """Eval mode, no gradients, optionally cast to ``dtype``."""
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    if dtype is not None:
        module = module.to(dtype=dtype)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Teacher:
    """A frozen module mapping images to logits. Not an ``nn.Module`` itself: it is never part of a model's
    state dict, an optimizer's parameters or a DDP wrapper."""

    def __init__(self, module: nn.Module, dtype: str | torch.dtype | None = None) -> None:
        self.module = freeze(module, dtype)

    @property
    def num_classes(self) -> int | None:
        n = getattr(self.module, "num_classes", None)
        return n if isinstance(n, int) and n > 0 else None

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on ``inputs`` (in float32), computed in the teacher's own dtype."""
        self.module.eval()
        p = next(self.module.parameters(), None)
        dtype = p.dtype if p is not None else inputs.dtype
        # The teacher runs in its own dtype, outside any autocast the student uses.
        with torch.autocast(inputs.device.type, enabled=False):
            out = self.module(inputs.to(dtype))
        if isinstance(out, (tuple, list)):  # a module returning both heads of a distilled model
            out = combine_heads(out[0], out[1], "avg")
        return out.float()

    def logits(self, inputs: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """The teacher source interface of training: the logits of micro-batch ``batch`` of ``epoch``."""
        return self(inputs)


def as_teacher(teacher: nn.Module | Teacher | None) -> Teacher | None:
    """A :class:`Teacher` for any images -> logits module (frozen once), as given if it already is one."""
    if teacher is None or isinstance(teacher, Teacher):
        return teacher
    return Teacher(teacher)


__all__ = ["DTYPES", "Teacher", "as_teacher", "freeze"]
