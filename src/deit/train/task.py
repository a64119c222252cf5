"""One training step in one object: the task owns the student (and the forward pass DDP wraps), the source of
teacher outputs and the objective, and turns one micro-batch into its loss and the parts worth logging. The loop
(``deit.train.engine.Trainer``) only schedules, steps and saves; in training nothing but the task calls the teacher
(the teacher-output cache builder replays the stream through a task too).

What both networks see: the micro-batch moved to the device, augmented there when the loader left that to the device
(``data.device_augment``: ``augment``, a ``deit.data.device_augment.DeviceAugment``, applies the parameters the
workers drew), and, with mixup/cutmix on, mixed by a generator seeded from (seed, rank, epoch, micro-batch). The
global torch RNG (dropout, stochastic depth) is seeded from the same position first, so a run resumed at any
micro-batch replays exactly what the uninterrupted run did, and a cache built by replaying the stream holds what the
live teacher would have computed.

    task = TrainTask(student, DistillationObjective(base, "hard"), teacher, mixup=mixup, seed=0, env=env)
    out = task(images, labels, epoch, batch)      # out.loss (backpropagate), out.parts (detached, for logging)
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deit.data import DeviceBatch
from deit.inference.teacher import as_teacher
from deit.models.contract import has_two_heads, training_outputs
from deit.runtime.distributed import DistEnv
from deit.runtime.precision import autocast
from deit.train.compiling import CompiledStep
from deit.train.config import ConfigError
from deit.train.loss import DistillationObjective, check_token


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def mix(mixup: Callable | None, x: torch.Tensor, y: torch.Tensor, seed: int, rank: int, epoch: int, batch: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch ``batch`` of ``epoch`` on ``rank`` as the student and the teacher see it: mixed by a generator
    seeded from that position (``x`` is mixed in place)."""
    if mixup is None:
        return x, y
    return mixup(x, y, torch.Generator().manual_seed(derive_seed(seed, "mixup", rank, epoch, batch)))


class TrainView(nn.Module):
    """The forward pass training uses (``training_outputs``: both heads of a two-head model), as a module so that
    DDP wraps exactly that pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return training_outputs(self.model, x)


@dataclass
class StepOutput:
    loss: torch.Tensor  # the scalar to backpropagate (on the device)
    parts: dict[str, torch.Tensor]  # detached scalars on the device: "base", and "distillation" with a teacher term
    images: int  # images in the micro-batch


class TrainTask:
    """The student, where its teacher's outputs come from (a live ``Teacher``, a teacher-output cache, or none) and
    the objective, for one run on ``env``'s device. ``teacher``: anything with ``logits(x, epoch, batch)`` or any
    images -> logits module (wrapped and frozen once); it may also be given later (:meth:`set_teacher`), so that
    a run checks its student against the distillation setting before it loads a teacher."""

    def __init__(self, student: nn.Module | None, objective: DistillationObjective, teacher=None, *,
                 mixup: Callable | None = None, augment: Callable | None = None, seed: int = 0, env: DistEnv,
                 amp: str = "none", student_name: str = "this model", compile: bool = False,
                 report: Callable[[str], None] | None = None) -> None:
        self.student, self.objective, self.teacher = student, objective, as_teacher(teacher)
        self.mixup, self.augment, self.seed, self.env, self.amp = mixup, augment, seed, env, amp
        self.forward_model: nn.Module | None = None
        # compile: forward + objective (and so their backward) through torch.compile, measured; report: told the
        # compile time and the speed-up (deit.train.compiling)
        self.compiled = CompiledStep(self._terms, env.device, report) if compile and student is not None else None
        if student is not None:
            # Checked once, here: whether the distillation setting fits the student's heads.
            check_token(objective.distillation_type, objective.token, has_two_heads(student), student_name)
            self.forward_model = TrainView(student)
            if env.distributed:
                device = env.device
                self.forward_model = nn.parallel.DistributedDataParallel(
                    self.forward_model, device_ids=[device.index] if device.type == "cuda" else None)

    def set_teacher(self, teacher) -> None:
        self.teacher = as_teacher(teacher)

    # ------------------------------------------------------------------------------------------- the stream
    def view(self, x: torch.Tensor | DeviceBatch, y: torch.Tensor, epoch: int, batch: int, rank: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``batch`` of ``epoch`` on ``rank`` (default: this process's) as the networks see it."""
        rank = self.env.rank if rank is None else rank
        if isinstance(x, DeviceBatch) != (self.augment is not None):
            raise ValueError("the loader and the task disagree on data.device_augment: build both from one config "
                             "(a DeviceBatch needs the task's augment stage, and only a DeviceBatch can take it)")
        x = x.to(self.env.device, non_blocking=True)
        y = y.to(self.env.device, non_blocking=True)
        if self.augment is not None:
            x = self.augment(x)
        return mix(self.mixup, x, y, self.seed, rank, epoch, batch)

    def teacher_outputs(self, x: torch.Tensor, epoch: int, batch: int) -> torch.Tensor | None:
        """The teacher's float32 logits on the viewed batch ``x`` (None without distillation)."""
        if not self.objective.distilling:
            return None
        if self.teacher is None:
            raise ConfigError(f"distillation.type={self.objective.distillation_type!r} needs a teacher or a "
                              "teacher-output cache: set teacher.checkpoint (or distillation.teacher_cache)")
        return self.teacher.logits(x, epoch, batch)

    @property
    def validation_teacher(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The teacher validation compares the student with (the live one; a run reading a cache has none)."""
        if not self.objective.distilling or self.teacher is None:
            return None
        return getattr(self.teacher, "live", None)

    # --------------------------------------------------------------------------------------------- the step
    def accumulating(self, accumulate: bool) -> contextlib.AbstractContextManager:
        """While gradients accumulate over micro-batches, DDP skips its all-reduce (``no_sync``)."""
        if accumulate and isinstance(self.forward_model, nn.parallel.DistributedDataParallel):
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def timing(self) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward: the compiled step's measurement (a no-op otherwise)."""
        return self.compiled.timing() if self.compiled is not None else contextlib.nullcontext()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int) -> StepOutput:
        """Forward and objective of micro-batch ``batch`` of ``epoch`` (the caller backpropagates ``loss``)."""
        torch.manual_seed(derive_seed(self.seed, "step", self.env.rank, epoch, batch))
        x, y = self.view(x, y, epoch, batch)
        teacher_logits = self.teacher_outputs(x, epoch, batch)
        terms = (self.compiled or self._terms)(x, y, teacher_logits)
        loss = terms.pop("loss")
        return StepOutput(loss, terms, x.shape[0])

    def _terms(self, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None
               ) -> dict[str, torch.Tensor]:
        with autocast(self.env.device, self.amp):
            return self.objective.terms(self.forward_model(x), y, teacher_logits)


__all__ = ["StepOutput", "TrainTask", "TrainView", "derive_seed", "mix"]
