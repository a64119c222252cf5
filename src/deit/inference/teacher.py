"""A frozen teacher, as one callable: a batch of the student's inputs in, float32 logits out.

:class:`Teacher` owns what running a teacher means: eval mode and no gradients (so BatchNorm statistics never
move and no optimizer or DDP wrapper ever sees its weights), its own dtype (bf16 where native: ``dtype: auto``),
channels-last memory for convolutional teachers, inference mode, outside any autocast the student uses; and its own
preprocessing: when the teacher's checkpoint records another input size, mean or std than the student's, the
student's batch is converted to the teacher's (:class:`InputAdapter`: re-normalised, resized).

Training (the distillation loss), evaluation (agreement with the teacher) and ``deit eval --teacher`` only ever
call it. ``logits(inputs, epoch, batch)`` is the interface of every teacher source of a training run: a live
teacher ignores the stream position, a teacher-output cache reads by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deit.models.contract import combine_heads
from deit.models.preprocessing import Preprocessing

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


def _is_convnet(module: nn.Module) -> bool:
    """Whether most of the module's compute is 2-d convolutions (a ViT's one patch projection does not count)."""
    convs = sum(1 for m in module.modules() if isinstance(m, nn.Conv2d))
    return convs > 1


class InputAdapter:
    """Converts a batch normalised for the student into the teacher's own input: un-normalise with the student's
    mean/std, resize to the teacher's input size (its interpolation, antialiased when shrinking), normalise with
    the teacher's mean/std. The identity when the two preprocessings agree on those."""

    def __init__(self, student: Preprocessing, teacher: Preprocessing) -> None:
        self.student, self.teacher = student, teacher
        self.resize = student.input_size != teacher.input_size
        self.renormalise = (student.mean, student.std) != (teacher.mean, teacher.std)

    @property
    def identity(self) -> bool:
        return not (self.resize or self.renormalise)

    def describe(self) -> str:
        s, t = self.student, self.teacher
        changes = []
        if self.renormalise:
            changes.append(f"re-normalised from mean {_fmt(s.mean)} std {_fmt(s.std)} to mean {_fmt(t.mean)} "
                           f"std {_fmt(t.std)}")
        if self.resize:
            changes.append(f"resized {s.input_size} -> {t.input_size} px ({t.interpolation})")
        return f"the teacher's checkpoint records its own preprocessing: the student's batches are {'; '.join(changes)}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        if self.renormalise:
            x = x * _channels(self.student.std, x) + _channels(self.student.mean, x)
        if self.resize:
            size = self.teacher.input_size
            mode = "bilinear" if self.teacher.interpolation == "nearest" else self.teacher.interpolation
            x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False,
                              antialias=size < x.shape[-1])
        if self.renormalise:
            x = (x - _channels(self.teacher.mean, x)) / _channels(self.teacher.std, x)
        return x


def _channels(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


class Teacher:
    """A frozen module mapping images to logits. Not an ``nn.Module`` itself: it is never part of a model's
    state dict, an optimizer's parameters or a DDP wrapper."""

    def __init__(self, module: nn.Module, dtype: str | torch.dtype | None = None,
                 adapter: InputAdapter | None = None) -> None:
        self.module = freeze(module, dtype)
        self.channels_last = _is_convnet(self.module)
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.adapter = adapter if adapter is not None and not adapter.identity else None

    @property
    def num_classes(self) -> int | None:
        n = getattr(self.module, "num_classes", None)
        return n if isinstance(n, int) and n > 0 else None

    @property
    def live(self) -> Teacher:
        """The teacher that computes (for a live teacher, itself): what evaluation compares with."""
        return self

    @property
    def preprocessing(self) -> Preprocessing | None:
        return getattr(self.module, "preprocessing", None)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits on ``inputs`` (in float32), computed in the teacher's own dtype."""
        # Computed under inference mode; cloned out of it, since the loss uses it under autograd.
        return self._forward(inputs).clone()

    @torch.inference_mode()
    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        p = next(self.module.parameters(), None)
        dtype = p.dtype if p is not None else inputs.dtype
        x = self.adapter(inputs.float()) if self.adapter is not None else inputs
        x = x.to(dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        # The teacher runs in its own dtype, outside any autocast the student uses.
        with torch.autocast(inputs.device.type, enabled=False):
            out = self.module(x)
        if isinstance(out, (tuple, list)):  # a module returning both heads of a distilled model
            out = combine_heads(out[0], out[1], "avg")
        return out.float()

    def logits(self, inputs: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """The teacher source interface of training: the logits of micro-batch ``batch`` of ``epoch``."""
        return self(inputs)


def as_teacher(teacher):
    """A :class:`Teacher` for any images -> logits module (frozen once); a teacher source (anything with
    ``logits(inputs, epoch, batch)``, e.g. a Teacher or a teacher-output cache) as given."""
    if teacher is None or callable(getattr(teacher, "logits", None)):
        return teacher
    return Teacher(teacher)


__all__ = ["DTYPES", "InputAdapter", "Teacher", "as_teacher", "freeze"]
