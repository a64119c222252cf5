"""A run's calibration for ``budget_minutes``: before it trains, time what the run itself will do — a few of its
optimizer steps (its data loading, its teacher or teacher-output cache, its optimizer, on its real model), a
validation over a slice of its val loader scaled to the whole set, one save — then undo all of it, so the run
trains exactly as an unbudgeted run of the planned epochs would (weights, optimizer, EMA, grad scaler, RNGs, the
loaders' generators, the teacher cache's position). ``plan_budget`` measures, plans (``deit.train.budget``) and
prints the plan; under torchrun every rank calibrates (the steps are collective) and rank 0's plan is everyone's.
While the run trains, ``BudgetWatch`` says when it falls far enough behind its plan to end past the budget.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from deit.runtime.distributed import DistEnv, on_main
from deit.runtime.typedconfig import to_dict
from deit.train.budget import Measurement, plan_line, plan_run
from deit.train.checkpointing import RunDir
from deit.train.components import RunComponents
from deit.train.config import TrainConfig
from deit.train.engine import Clock, Trainer, validates
from deit.train.hooks import Checkpointer, Hook
from deit.train.optim import build_schedule
from deit.train.preemption import StopTraining

MAX_STEPS = 20  # optimizer steps timed at most ...
MAX_SECONDS = 30.0  # ... or until this many seconds have passed (the step under way finishes)
WARMUP_STEPS = 2  # not timed: first calls, allocations, the loader's start
VALIDATION_BATCHES = 8  # validation timed on at most this many batches ...
VALIDATION_SECONDS = 15.0  # ... or this many seconds, then scaled to the whole val set


def _sync(env: DistEnv) -> None:
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)


class _Stopwatch(Hook):
    """The end time of every optimizer step; as the trainer's ``stop``, asks to stop at the last one it times (the
    trainer agrees on that step over every rank)."""

    def __init__(self, env: DistEnv, clock: Callable[[], float]) -> None:
        self.env, self.clock = env, clock
        self.start = clock()
        self.ends: list[float] = []

    def on_step(self, trainer: Trainer, lr: float) -> None:
        _sync(self.env)
        self.ends.append(self.clock())

    def __call__(self) -> bool:  # polled before each optimizer step: is this one the last?
        done = len(self.ends) + 1
        return done >= MAX_STEPS or (done > WARMUP_STEPS and self.clock() - self.start >= MAX_SECONDS)

    def seconds(self) -> tuple[float, float]:
        """(the first step, one step in the steady state)."""
        ends, n = self.ends, len(self.ends)
        warm = min(WARMUP_STEPS, n - 1)
        since = ends[warm - 1] if warm else self.start
        return ends[0] - self.start, (ends[-1] - since) / (n - warm)


def _time_steps(trainer: Trainer, loader, env: DistEnv, clock: Callable[[], float]) -> tuple[int, float, float]:
    """(steps run, first step seconds, steady step seconds) of the run's own training steps from its start."""
    watch = _Stopwatch(env, clock)
    trainer.stop = watch
    loader.sampler.set_epoch(trainer.progress.epoch, start_batch=trainer.progress.batch)
    try:
        trainer.train_one_epoch(loader, len(loader), [watch])
    except StopTraining:
        pass
    finally:
        trainer.stop, trainer.stop_agreed = None, False
    return len(watch.ends), *watch.seconds()


class _Slice:
    """The first batches of a loader, as many as ``VALIDATION_BATCHES`` or ``VALIDATION_SECONDS`` allow, each
    pass over it timed: (when it started, when each batch arrived)."""

    def __init__(self, loader, clock: Callable[[], float]) -> None:
        self.loader, self.clock = loader, clock
        self.passes: list[tuple[float, list[float]]] = []

    def __iter__(self) -> Iterator:
        start, arrived = self.clock(), []
        self.passes.append((start, arrived))
        batches = iter(self.loader)
        while len(arrived) < VALIDATION_BATCHES and not (
                len(arrived) >= 2 and self.clock() - start >= VALIDATION_SECONDS):
            batch = next(batches, None)
            if batch is None:
                return
            arrived.append(self.clock())
            yield batch


def _time_validation(trainer: Trainer, loader, env: DistEnv, clock: Callable[[], float]) -> float:
    """Seconds of one validation of the whole val set (the student's, and the EMA's when there is one): each pass
    over a slice of the loader timed, its first batch apart (the loader's start), the rest scaled to every batch."""
    part = _Slice(loader, clock)
    trainer.validate(part)
    _sync(env)
    ends = [start for start, _ in part.passes[1:]] + [clock()]
    seconds = 0.0
    for (start, arrived), end in zip(part.passes, ends, strict=True):
        seconds += arrived[0] - start + (end - arrived[0]) / len(arrived) * len(loader)
    return seconds


def process_seconds() -> float:
    """Wall seconds since this process started (its imports included), where the OS says; else since this module
    was imported. ``deit train`` counts its budget from there."""
    try:
        stat = Path("/proc/self/stat").read_text()
        started = int(stat.rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")  # field 22: ticks since boot
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _time_finish(trainer: Trainer, cfg: TrainConfig, env: DistEnv, root: Path, clock: Callable[[], float]
                 ) -> tuple[float, float]:
    """(one save as the run makes it: last, best and EMA weights, the training state; the plots a run ends with),
    on rank 0, in a scratch directory beside the run's files."""
    if not env.is_main:
        return 0.0, 0.0
    with tempfile.TemporaryDirectory(dir=root, prefix=".calibration-") as scratch:
        saver = Checkpointer(RunDir(scratch), env, to_dict(cfg), Clock(), num_batches=1)
        start = clock()
        saver.save(trainer, {"top1": float("inf")})  # "improved": the best weights are written too
        save = clock() - start
        try:
            import matplotlib.pyplot  # noqa: F401  (imported now: the run's plots will not import it again)

            from deit.train.plots import plot_run
        except ImportError:  # no plots at the end either
            return save, 0.0
        run = RunDir(scratch)
        run.log({"kind": "step", "epoch": 1, "step": 1, "lr": 0.1, "loss": 1.0})
        run.log({"kind": "epoch", "epoch": 1, "step": 1, "lr": 0.1, "train_loss": 1.0, "loss": 1.0, "top1": 0.5})
        start = clock()
        plot_run(scratch)
        return save, clock() - start


class _Undo:
    """Everything the calibration changes, as it was before it."""

    def __init__(self, trainer: Trainer, loaders: Iterable) -> None:
        self.trainer, self.state = trainer, copy.deepcopy(trainer.state_dict())
        self.generators = [(g, g.get_state()) for g in (getattr(x, "generator", None) for x in loaders) if g]
        # A teacher-output cache filled on the fly buffers the epoch it is in: the calibration gets a copy.
        self.teacher = trainer.task.teacher
        trainer.task.teacher = copy.copy(self.teacher)

    def __call__(self) -> None:
        self.trainer.load_state_dict(self.state)
        self.trainer.task.teacher = self.teacher
        for generator, state in self.generators:
            generator.set_state(state)


def measure(cfg: TrainConfig, env: DistEnv, parts: RunComponents, root: Path,
            clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time the run's steps, a validation (when it validates) and a save, then put everything back."""
    trainer, data = parts.trainer, parts.data
    start = clock()
    undo = _Undo(trainer, (data.train_loader, data.val_loader))
    try:
        steps, first, step = _time_steps(trainer, data.train_loader, env, clock)
        validation = _time_validation(trainer, data.val_loader, env, clock) if cfg.eval_every >= 0 else 0.0
        save, finish = _time_finish(trainer, cfg, env, root, clock)
    finally:
        undo()
    return Measurement(steps, step, first, parts.total_batch, validation, save, finish, clock() - start)


def plan_budget(cfg: TrainConfig, env: DistEnv, parts: RunComponents, root: Path, clock: Clock,
                say: Callable[[str], None]) -> TrainConfig:
    """``cfg`` planned to its ``budget_minutes`` from a calibration of ``parts`` (rank 0's, on every rank), the
    trainer's schedule rebuilt for it; the plan printed."""
    say(f"budget {cfg.budget_minutes:g} min: timing up to {MAX_STEPS} steps, a validation and a save to plan the "
        f"epochs (up to {cfg.epochs})")
    m = measure(cfg, env, parts, root)
    cfg = on_main(env, lambda: plan_run(cfg, m, parts.steps_per_epoch, clock.budget_elapsed()))
    spe = parts.steps_per_epoch
    parts.trainer.schedule = build_schedule(cfg.schedule, parts.lr, spe, cfg.total_steps(spe))
    say(plan_line(cfg))
    return cfg


class BudgetWatch(Hook):
    """At an epoch's end, a warning when the run has fallen so far behind its plan that at its present pace it ends
    past its budget (the machine got slower than when it was calibrated). The schedule stays as planned: a cosine
    cut short would not be the run that was planned either."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, clock: Clock) -> None:
        assert cfg.budget_plan is not None
        self.cfg, self.plan, self.env, self.clock = cfg, cfg.budget_plan, env, clock

    def planned(self, epoch: int) -> float:
        """The seconds the plan expects the run to have taken at the end of (1-based) ``epoch``."""
        p, cfg = self.plan, self.cfg
        validations = sum(validates(e, cfg.epochs, cfg.eval_every) for e in range(1, epoch + 1))
        return (p.startup_seconds + epoch * (p.steps_per_epoch * p.step_seconds + p.save_seconds)
                + validations * p.validation_seconds)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        if not self.env.is_main or epoch >= self.cfg.epochs:  # the last epoch: the run's end line says it
            return
        p, actual, planned = self.plan, self.clock.budget_elapsed(), self.planned(epoch)
        pace = max(1.0, (actual - p.startup_seconds) / max(planned - p.startup_seconds, 1e-9))
        end = actual + (60 * p.predicted_minutes - planned) * pace
        if end > 60 * p.budget_minutes:
            print(f"warning: budget {p.budget_minutes:g} min: epoch {epoch} ended at {actual / 60:.1f} min, planned "
                  f"{planned / 60:.1f}; at this pace the run ends at about {end / 60:.1f} min (the machine is slower "
                  "than when the run was calibrated; the schedule stays as planned)", file=sys.stderr, flush=True)


__all__ = ["MAX_SECONDS", "MAX_STEPS", "BudgetWatch", "measure", "plan_budget", "process_seconds"]
