"""The training loop: ``Trainer.fit`` runs the epochs, one optimizer step at a time, and tells its hooks.

The trainer only schedules and steps: one micro-batch's loss is the task's (``deit.train.task.TrainTask``: the
student, its teacher source and the objective), the optimizer, schedule, EMA and grad scaler are given to it, and
everything around the loop (checkpoints, metrics, progress bars) is a hook (``deit.train.hooks``).

No host sync on the hot path: losses stay on the device, summed there; once per optimizer step a single reduction
over ranks carries the count of non-finite micro-batch losses, the stop flag and the losses, and only its two flags
are read on the host (to stop every rank at the same step, before a bad update). The loss values leave the device
when a metrics line or a checkpoint needs them.

Reproducibility: the task seeds the global torch RNG (dropout, stochastic depth) and mixup from (seed, rank, epoch,
micro-batch), so a run resumed at any optimizer step replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deit.inference.evaluation import evaluate
from deit.runtime.distributed import DistEnv
from deit.train.checkpointing import rng_states, set_rng_states
from deit.train.ema import Lookahead, ModelEma
from deit.train.optim import LRSchedule
from deit.train.preemption import StopTraining
from deit.train.task import StepOutput, TrainTask


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


class Meter:
    """Running sums of the loss and its parts, since the last metrics line (the window) and over the epoch, kept on
    the device (float64): ``window()`` and ``epoch_means()`` bring them to the host. Saved with the training state, so
    the metrics a resumed run writes equal the uninterrupted run's."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.window_sums: dict[str, torch.Tensor] = {}
        self.epoch_sums: dict[str, torch.Tensor] = {}
        self.count = 0  # micro-batches in the window
        self.epoch_count = 0
        self.images = 0
        self.epoch_images = 0  # the images of the epoch over all ranks (for a rate; not saved with the state)
        self.started = time.perf_counter()
        self.last: dict[str, float] = {}  # the window means of the last metrics line (what a progress bar shows)

    def add(self, sums: dict[str, torch.Tensor], micro_batches: int, images: int) -> None:
        """Add the loss sums of ``micro_batches`` micro-batches (averaged over ranks) and the images they held."""
        for name, value in sums.items():
            for store in (self.window_sums, self.epoch_sums):
                store[name] = store[name] + value if name in store else value.clone()
        self.count += micro_batches
        self.epoch_count += micro_batches
        self.images += images
        self.epoch_images += images

    def window(self) -> dict[str, float]:
        """The window's mean of the loss and each part (one transfer from the device), and start a new window."""
        means = _means(self.window_sums, self.count)
        self.last = means or self.last
        self.window_sums, self.count, self.images, self.started = {}, 0, 0, time.perf_counter()
        return means

    def reset_epoch(self) -> None:
        self.epoch_sums, self.epoch_count, self.epoch_images = {}, 0, 0

    @property
    def epoch_loss(self) -> float | None:
        return _means(self.epoch_sums, self.epoch_count).get("loss")

    @property
    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)

    def state_dict(self) -> dict:
        return {"window_sums": _floats(self.window_sums), "count": self.count,
                "epoch_sums": _floats(self.epoch_sums), "epoch_count": self.epoch_count}

    def load_state_dict(self, state: dict) -> None:
        tensor = lambda v: torch.tensor(v, dtype=torch.float64, device=self.device)  # noqa: E731
        self.window_sums = {k: tensor(v) for k, v in state["window_sums"].items()}
        self.epoch_sums = {k: tensor(v) for k, v in state["epoch_sums"].items()}
        self.count, self.epoch_count = state["count"], state["epoch_count"]
        self.images, self.started = 0, time.perf_counter()


def _floats(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    if not sums:
        return {}
    values = torch.stack(list(sums.values())).tolist()
    return dict(zip(sums, values, strict=True))


def _means(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    return {k: v / count for k, v in _floats(sums).items()} if count else {}


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


class Clock:
    """Wall seconds of a run: those of earlier processes (``offset``, from the saved state) plus this one's.
    ``lead``: what this process spent before the clock started (its imports), which a time budget counts too."""

    def __init__(self, offset: float = 0.0, lead: float = 0.0) -> None:
        self.offset, self.lead, self.started = offset, lead, time.perf_counter()

    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.started

    def budget_elapsed(self) -> float:
        return self.elapsed() + self.lead


def validates(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether the run validates after (1-based) ``epoch``: every ``eval_every``-th one and always the last
    (``eval_every`` -1: never)."""
    if eval_every < 0:
        return False
    return epoch == epochs or (eval_every > 0 and epoch % eval_every == 0)


class _Group:
    """An optimizer step's micro-batches so far: their loss sums and non-finite count, on the device."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.non_finite: torch.Tensor | None = None
        self.micro_batches = 0
        self.images = 0

    def add(self, out: StepOutput) -> None:
        loss = out.loss.detach()
        values = {"loss": loss, **out.parts}
        for name, value in values.items():
            value = value.to(torch.float64)
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        bad = (~torch.isfinite(loss)).to(torch.float64)
        self.non_finite = bad if self.non_finite is None else self.non_finite + bad
        self.micro_batches += 1
        self.images += out.images


@dataclass
class Trainer:
    """Everything one optimizer step needs, and the loop over epochs."""

    task: TrainTask  # the student, its teacher source and the objective: micro-batch -> loss
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    env: DistEnv
    accum_steps: int = 1
    clip_grad: float | None = None
    ema: ModelEma | None = None
    lookahead: Lookahead | None = None
    tta: str = "none"  # validation's test-time augmentation (deit.inference.evaluation.TTA_MODES)
    scaler: torch.amp.GradScaler | None = None
    # Polled once per optimizer step (e.g. a deit.runtime.signals.StopFlag) and summed over ranks in that step's
    # reduction, so every rank stops at the same optimizer step: fit raises StopTraining there.
    stop: Callable[[], bool] | None = None
    progress: Progress = field(default_factory=Progress)
    meter: Meter | None = None
    stop_agreed: bool = False

    def __post_init__(self) -> None:
        if self.meter is None:
            self.meter = Meter(self.env.device)

    @property
    def model(self) -> nn.Module:
        """The raw student (weights, evaluation, checkpoints)."""
        return self.task.student

    def state_dict(self) -> dict:
        """Everything a resume needs: weights, optimizer, EMA, grad scaler, position, meters, RNG states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
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
        if self.lookahead is not None:
            if state.get("lookahead") is None:
                raise ValueError("the saved state has no Lookahead weights but lookahead.enabled is on; resume "
                                 "with lookahead.enabled=false")
            self.lookahead.load_state_dict(state["lookahead"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.progress.load_state_dict(state["progress"])
        self.meter.load_state_dict(state["meter"])
        set_rng_states(state["rng"])

    @property
    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler is not None and self.scaler.is_enabled() else None

    # ------------------------------------------------------------------------------------------------ the loop
    def fit(self, loader, val_loader: Iterable, epochs: int, eval_every: int, hooks: Sequence[Any] = (),
            total_steps: int | None = None) -> dict:
        """Train from ``progress`` to the end of epoch ``epochs``, validating as ``eval_every`` says; returns the
        last validation metrics (empty if this call validated nothing). ``total_steps``: the optimizer step at which
        the last epoch ends early (a time budget's plan), its validation and save then made as at a full epoch's."""
        p, last = self.progress, {}
        num_batches = len(loader)
        while p.epoch < epochs:
            if p.batch < num_batches and (total_steps is None or p.step < total_steps):
                loader.sampler.set_epoch(p.epoch, start_batch=p.batch)
                if p.batch == 0:
                    self.meter.reset_epoch()
                for hook in hooks:
                    hook.on_epoch_start(self, num_batches)
                self.train_one_epoch(loader, num_batches, hooks, total_steps)
            metrics = self.validate(val_loader) if validates(p.epoch + 1, epochs, eval_every) else {}
            p.epoch += 1
            p.batch = 0
            last = metrics or last
            for hook in hooks:
                hook.on_epoch_end(self, p.epoch, metrics)
        return last

    def validate(self, val_loader: Iterable) -> dict:
        """The student's metrics on ``val_loader`` (and the EMA's, prefixed ``ema_``)."""
        amp = self.task.amp
        metrics = evaluate(self.model, val_loader, self.env, self.task.validation_teacher, amp, self.tta)
        if self.ema is not None:
            ema = evaluate(self.ema.module, val_loader, self.env, None, amp, self.tta)
            metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "num_samples"})
        return metrics

    def train_one_epoch(self, loader: Iterable, num_batches: int, hooks: Sequence[Any] = (),
                        total_steps: int | None = None) -> None:
        """Train from ``progress.batch`` to the end of ``progress.epoch``, or to optimizer step ``total_steps`` if
        that comes first; ``loader`` yields those batches."""
        self.model.train()
        self.task.forward_model.train()
        batches = iter(loader)
        try:
            self._train_batches(batches, num_batches, hooks, total_steps)
        finally:  # a pass left early (a stop, a budget's cut, an error) ends now, and its loader workers with it
            getattr(batches, "close", lambda: None)()

    def _train_batches(self, batches: Iterable, num_batches: int, hooks: Sequence[Any], total_steps: int | None
                       ) -> None:
        p = self.progress
        group = _Group()
        for x, y in batches:
            b = p.batch
            group_start = b - b % self.accum_steps
            group_size = min(self.accum_steps, num_batches - group_start)
            last_of_group = b - group_start == group_size - 1
            if b == group_start:
                lr = self.schedule.apply(self.optimizer, p.step)
                self.optimizer.zero_grad(set_to_none=True)
                group = _Group()
            self._backward(x, y, group, group_size, accumulate=not last_of_group and self.env.distributed)
            p.batch += 1
            for hook in hooks:
                hook.on_batch(self)
            if last_of_group:
                self._close_group(group)
                self._optimizer_step()
                for hook in hooks:
                    hook.on_step(self, lr)
                if self.stop_agreed:
                    raise StopTraining(f"stop requested at optimizer step {p.step}")
                if total_steps is not None and p.step >= total_steps:
                    return

    def _backward(self, x: torch.Tensor, y: torch.Tensor, group: _Group, group_size: int, accumulate: bool) -> None:
        """Forward, loss and backward of one micro-batch (gradients accumulate into the group's step)."""
        p = self.progress
        with self.task.accumulating(accumulate), self.task.timing():
            out = self.task(x, y, p.epoch, p.batch)
            scaled = out.loss / group_size
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()
        group.add(out)

    def _close_group(self, group: _Group) -> None:
        """The optimizer step's one reduction over ranks: non-finite losses, the stop flag, the loss sums."""
        env, names = self.env, list(group.sums)
        stop = float(self.stop is not None and self.stop())
        flags = torch.stack([group.non_finite, torch.tensor(stop, dtype=torch.float64, device=env.device),
                             *(group.sums[n] for n in names)])
        if env.distributed:
            torch.distributed.all_reduce(flags)
        non_finite, stops = flags[:2].tolist()  # the step's one host sync
        self.stop_agreed = self.stop_agreed or stops > 0
        if non_finite:
            loss = float(flags[2]) / env.world_size / group.micro_batches
            p = self.progress
            raise NonFiniteLossError(p.step, p.epoch, self.schedule(p.step), loss, self.loss_scale)
        sums = dict(zip(names, flags[2:] / env.world_size, strict=True))
        self.meter.add(sums, group.micro_batches, group.images * env.world_size)

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
        self.progress.step += 1
        if self.lookahead is not None:
            self.lookahead.after_step(self.model, self.progress.step, self.schedule.total_steps)
        if self.ema is not None:
            self.ema.update(self.model)


__all__ = [
    "Clock",
    "Meter",
    "NonFiniteLossError",
    "Progress",
    "Trainer",
    "validates",
]
