"""The training loop: ``Trainer.fit`` runs the epochs, one optimizer step at a time, and tells its hooks.

The trainer only schedules and steps: the run's parts (student, teacher source, loss, optimizer, EMA) are given
to it, and everything around the loop (checkpoints, metrics, progress bars) is a hook (``deit.train.hooks``).

Reproducibility: before every micro-batch the global torch RNG (dropout, stochastic depth) is re-seeded from
(seed, rank, epoch, batch index), and mixup draws from a generator seeded the same way, so a run resumed at any
optimizer step replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from deit.inference.evaluation import evaluate
from deit.models.contract import training_outputs
from deit.runtime.distributed import DistEnv, all_reduce_sum
from deit.runtime.precision import autocast
from deit.train.checkpointing import rng_states, set_rng_states
from deit.train.ema import ModelEma
from deit.train.loss import DistillationLoss
from deit.train.optim import LRSchedule
from deit.train.preemption import StopTraining


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops without writing the bad weights."""

    def __init__(self, step: int, epoch: int, lr: float, loss: float, loss_scale: float | None) -> None:
        # epoch: 0-based, like Progress.epoch
        self.step, self.epoch, self.lr, self.loss, self.loss_scale = step, epoch, lr, loss, loss_scale
        scale = f", loss scale {loss_scale:g}" if loss_scale is not None else ", no loss scaling"
        fix = "lower optim.lr or set optim.clip_grad (e.g. 1.0)"
        if loss_scale is not None:
            fix += ", or use amp=bf16 (no loss scaling, fp16's range problems gone)"
        super().__init__(
            f"non-finite loss ({loss}) at optimizer step {step} (epoch {epoch + 1}), lr {lr:.6g}{scale}; {fix}"
        )


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and Python versions)."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def mix(mixup: Callable | None, x: torch.Tensor, y: torch.Tensor, seed: int, rank: int, epoch: int, batch: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch ``batch`` of ``epoch`` on ``rank`` as the student (and the teacher) see it: mixed by a
    generator seeded from that position (``x`` is mixed in place). The one definition the trainer and the
    teacher-cache builder share."""
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
class Meter:
    """Running loss sums: since the last metrics line (window) and over the epoch. Saved with the training state,
    so the metrics a resumed run writes equal the uninterrupted run's."""

    loss_sum: float = 0.0
    count: int = 0
    epoch_loss_sum: float = 0.0
    epoch_count: int = 0
    images: int = 0
    epoch_images: int = 0  # this process's images of the epoch (a rate, not saved with the state)
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, images: int) -> None:
        self.loss_sum += loss
        self.count += 1
        self.epoch_loss_sum += loss
        self.epoch_count += 1
        self.images += images
        self.epoch_images += images

    def reset(self) -> None:
        self.loss_sum, self.count, self.images, self.started = 0.0, 0, 0, time.perf_counter()

    def reset_epoch(self) -> None:
        self.epoch_loss_sum, self.epoch_count, self.epoch_images = 0.0, 0, 0

    @property
    def epoch_loss(self) -> float | None:
        return self.epoch_loss_sum / self.epoch_count if self.epoch_count else None

    @property
    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("loss_sum", "count", "epoch_loss_sum", "epoch_count")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.images, self.started = 0, time.perf_counter()


@dataclass
class Progress:
    """Where training stands: what a resume needs besides weights and optimizer."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps done in total
    best_top1: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0  # wall seconds of training so far, over every process that worked on the run

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class Hook:
    """What runs around the loop; every method is optional. ``trainer.progress`` says where training stands."""

    def on_epoch_start(self, trainer: Trainer, num_batches: int) -> None: ...

    def on_batch(self, trainer: Trainer, loss: float) -> None: ...

    def on_step(self, trainer: Trainer, lr: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None: ...


class Clock:
    """Wall seconds of a run: those of earlier processes (``offset``, from the saved state) plus this one's."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset, self.started = offset, time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.started


def validates(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether the run validates after (1-based) ``epoch``: every ``eval_every``-th one and always the last
    (``eval_every`` -1: never)."""
    if eval_every < 0:
        return False
    return epoch == epochs or (eval_every > 0 and epoch % eval_every == 0)


@dataclass
class Trainer:
    """Everything one optimizer step needs, and the loop over epochs."""

    model: nn.Module  # the raw student (weights, evaluation, checkpoints)
    forward_model: nn.Module  # what the forward pass runs: TrainView(model), maybe wrapped in DDP
    criterion: DistillationLoss  # owns the teacher source (criterion.teacher) when distilling
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    env: DistEnv
    seed: int = 0
    amp: str = "none"
    accum_steps: int = 1
    clip_grad: float | None = None
    mixup: Callable | None = None
    ema: ModelEma | None = None
    scaler: torch.amp.GradScaler | None = None
    # Polled every micro-batch (e.g. a deit.runtime.signals.StopFlag); summed over ranks with the loss, so every
    # rank stops at the same optimizer step: fit raises StopTraining there.
    stop: Callable[[], bool] | None = None
    progress: Progress = field(default_factory=Progress)
    meter: Meter = field(default_factory=Meter)
    stop_agreed: bool = False

    def state_dict(self) -> dict:
        """Everything a resume needs: weights, optimizer, EMA, grad scaler, position, meters, RNG states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "progress": self.progress.state_dict(),
            "meter": self.meter.state_dict(),
            "rng": rng_states(),
            "world_size": self.env.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError("the saved state has no EMA weights but ema.enabled is on; resume with "
                                 "ema.enabled=false")
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.progress.load_state_dict(state["progress"])
        self.meter.load_state_dict(state["meter"])
        set_rng_states(state["rng"])

    @property
    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler is not None and self.scaler.is_enabled() else None

    # ------------------------------------------------------------------------------------------------ the loop
    def fit(self, loader, val_loader: Iterable, epochs: int, eval_every: int, hooks: Sequence[Hook] = ()) -> dict:
        """Train from ``progress`` to the end of epoch ``epochs``, validating as ``eval_every`` says; returns the
        last validation metrics (empty if this call validated nothing)."""
        p, last = self.progress, {}
        num_batches = len(loader)
        while p.epoch < epochs:
            if p.batch < num_batches:
                loader.sampler.set_epoch(p.epoch, start_batch=p.batch)
                if p.batch == 0:
                    self.meter.reset_epoch()
                for hook in hooks:
                    hook.on_epoch_start(self, num_batches)
                self.train_one_epoch(loader, num_batches, hooks)
            metrics = self.validate(val_loader) if validates(p.epoch + 1, epochs, eval_every) else {}
            p.epoch += 1
            p.batch = 0
            last = metrics or last
            for hook in hooks:
                hook.on_epoch_end(self, p.epoch, metrics)
        return last

    @property
    def validate_teacher(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The teacher validation compares with (the live distillation teacher; a cache-only run has none)."""
        if self.criterion.distillation_type == "none" or self.criterion.teacher is None:
            return None
        return getattr(self.criterion.teacher, "live", None)

    def validate(self, val_loader: Iterable) -> dict:
        """The student's metrics on ``val_loader`` (and the EMA's, prefixed ``ema_``)."""
        metrics = evaluate(self.model, val_loader, self.env, self.validate_teacher, self.amp)
        if self.ema is not None:
            ema = evaluate(self.ema.module, val_loader, self.env, None, self.amp)
            metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "num_samples"})
        return metrics

    def train_one_epoch(self, loader: Iterable, num_batches: int, hooks: Sequence[Hook] = ()) -> None:
        """Train from ``progress.batch`` to the end of ``progress.epoch``; ``loader`` yields those batches."""
        p = self.progress
        self.model.train()
        self.forward_model.train()
        for x, y in loader:
            b = p.batch
            group_start = b - b % self.accum_steps
            group_size = min(self.accum_steps, num_batches - group_start)
            last_of_group = b - group_start == group_size - 1
            if b == group_start:
                lr = self.schedule.apply(self.optimizer, p.step)
                self.optimizer.zero_grad(set_to_none=True)
            loss_value = self._backward(x, y, group_size, sync=last_of_group or not self.env.distributed)
            p.batch += 1
            for hook in hooks:
                hook.on_batch(self, loss_value)
            if last_of_group:
                self._optimizer_step()
                for hook in hooks:
                    hook.on_step(self, lr)
                if self.stop_agreed:
                    raise StopTraining(f"stop requested at optimizer step {p.step}")

    def _backward(self, x: torch.Tensor, y: torch.Tensor, group_size: int, sync: bool) -> float:
        """Forward, loss and backward of one micro-batch (gradients accumulate); returns this rank's loss."""
        p, env = self.progress, self.env
        x = x.to(env.device, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        torch.manual_seed(derive_seed(self.seed, "step", env.rank, p.epoch, p.batch))
        x, y = mix(self.mixup, x, y, self.seed, env.rank, p.epoch, p.batch)
        with contextlib.nullcontext() if sync else self.forward_model.no_sync():
            teacher_logits = None
            if self.criterion.distillation_type != "none":
                teacher_logits = self.criterion.teacher.logits(x, p.epoch, p.batch)
            with autocast(env.device, self.amp):
                outputs = self.forward_model(x)
                loss = self.criterion(x, outputs, y, teacher_logits=teacher_logits)
            loss_value = loss.detach().float().item()
            stop = float(self.stop is not None and self.stop())
            ok, total, stops = all_reduce_sum([float(math.isfinite(loss_value)), loss_value, stop], env)
            self.stop_agreed = self.stop_agreed or stops > 0
            if ok < env.world_size:
                raise NonFiniteLossError(p.step, p.epoch, self.schedule(p.step), loss_value, self.loss_scale)
            scaled = loss / group_size
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()
        self.meter.add(total / env.world_size, x.shape[0] * env.world_size)
        return loss_value

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clip_grad is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.progress.step += 1


__all__ = [
    "Clock",
    "Hook",
    "Meter",
    "NonFiniteLossError",
    "Progress",
    "TrainView",
    "Trainer",
    "derive_seed",
    "mix",
    "validates",
]
