"""The whole ``deit train`` flow: run directory, components, resume, the loop with its hooks, the summary.

Python API::

    from deit.train import load_config, train
    cfg = load_config("digits-deit-distilled", ["epochs=5", "teacher.checkpoint=runs/teacher/best.safetensors"])
    result = train(cfg)                      # or train(cfg, teacher=any_module_mapping_images_to_logits)
    result.summary["final"]["top1"]
    train(cfg, datasets=(train_set, val_set))  # data set objects of your own (deit.data.ImageDataset)

Under ``torchrun --nproc_per_node N`` every process calls the same function; ranks come from the environment.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from deit.data import ImageDataset
from deit.data.datasets import given_data
from deit.inference.evaluation import evaluate
from deit.models import describe_model
from deit.runtime.distributed import DistEnv, barrier, cleanup, init_distributed, on_main, ranks_identical
from deit.runtime.files import atomic_write_text
from deit.runtime.signals import StopFlag
from deit.runtime.typedconfig import to_dict
from deit.train.budget import budget_line, keep_plan, outcome
from deit.train.calibration import BudgetWatch, plan_budget
from deit.train.checkpointing import RunDir
from deit.train.components import (
    RunComponents,
    build_components,
    check_runtime,
    follow_data_root,
    resolve_precision,
)
from deit.train.config import TrainConfig, default_output_dir
from deit.train.engine import Clock, NonFiniteLossError, Trainer
from deit.train.hooks import Checkpointer, MetricsLog, ProgressBar
from deit.train.preemption import Preempted, StopTraining
from deit.train.presets import dump_config
from deit.train.resume import check_same_data, open_run
from deit.train.teacher_source import check_teacher_checkpoint
from deit.train.tensorboard import TensorBoardSink, wants_tensorboard


@dataclass
class TrainResult:
    run_dir: Path
    model: nn.Module
    summary: dict


def train(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
    datasets: tuple[ImageDataset, ImageDataset] | None = None,
    resume: bool | str = False,
    started: float | None = None,
) -> TrainResult:
    """Train as ``cfg`` says; ``model``/``teacher`` replace the configured ones (any image -> logits module).

    ``datasets``: ``(train_set, val_set)`` objects of your own to train and validate on, instead of the data set
    ``cfg.data`` names (its loader and augmentation settings still apply). The run records ``data.dataset: given``
    and the sets' fingerprints (``ImageDataset.fingerprint()``); continuing it needs the same sets, others are
    refused.

    ``resume``: False follows ``cfg.resume`` (auto: continue a run of the same config in the output dir); True
    requires a saved state to continue (``deit train --resume``); "continue" continues a saved state if there is
    one, whatever config made it (a caller that owns the run directory, like ``deit reproduce --resume``).

    ``started``: when the run began, a ``time.perf_counter()`` reading, from which ``budget_minutes`` counts
    (``deit train``: its process's start, imports included); default: this call."""
    cfg.validate()
    if datasets is not None:
        cfg = replace(cfg, data=given_data(cfg.data, datasets))
    started = time.perf_counter() if started is None else started
    env = init_distributed(cfg.device)
    try:
        return _train(cfg, env, model, teacher, resume, started, datasets)
    finally:
        cleanup(env)


def _say(env: DistEnv, *lines: str) -> None:
    if env.is_main:
        for line in lines:
            print(line, flush=True)


def _restore(parts: RunComponents, state: dict | None, run: RunDir, env: DistEnv) -> None:
    """Load the saved state into the trainer and trim what the interrupted run logged after it."""
    trainer = parts.trainer
    if state is not None:
        trainer.load_state_dict(state)
        saved_world = state["world_size"]
        if saved_world != env.world_size and trainer.progress.batch and env.is_main:
            print(f"warning: the run was saved with {saved_world} process(es) and resumes with {env.world_size}: "
                  "the rest of this epoch's sample order differs from an uninterrupted run", file=sys.stderr)
        if state["ema"] is not None and trainer.ema is None and env.is_main:
            print(f"warning: {run.state} holds EMA weights but ema.enabled is off: the EMA stops here",
                  file=sys.stderr)
    if env.is_main and (run.config.is_file() or state is not None):
        # Drop what the interrupted run logged after its last saved state (all of it if it saved none).
        run.truncate_metrics(trainer.progress.step if state is not None else -1)


def describe_student(cfg: TrainConfig, model: nn.Module) -> str:
    """What the student really is: its registered name, or its shape and the name it was made from."""
    config = getattr(model, "config", None)
    try:
        return describe_model(config, cfg.model.name)
    except ValueError:  # not a deit model (the Python API's model=): its class
        return f"{type(model).__name__} (given to train(), not model.name {cfg.model.name})"


def _banner(cfg: TrainConfig, env: DistEnv, run: RunDir, parts: RunComponents, resumed: bool) -> None:
    p, data = parts.trainer.progress, parts.data
    n_params = sum(q.numel() for q in parts.model.parameters())
    lr, total_batch = parts.lr, parts.total_batch
    # Both splits carry their layout's note; it is the same sentence, said once.
    notes = list(dict.fromkeys(note for note in (data.train_set.note, data.val_set.note) if note))
    if parts.teacher is not None and parts.teacher.adapter is not None:
        notes.append(parts.teacher.adapter.describe())
    notes += parts.notes
    _say(
        env,
        "resolved config:",
        dump_config(cfg).rstrip(),
        f"run dir: {run.root}",
        f"world size {env.world_size} on {env.device.type}; batch {cfg.data.batch_size} per device, "
        f"{cfg.optim.accum_steps} accumulation step(s), effective batch {total_batch}",
        f"lr {lr:.6g} (base {cfg.optim.lr:g} x {total_batch}/{cfg.optim.lr_base_batch})" if cfg.optim.scale_lr
        else f"lr {lr:.6g} (not scaled by batch)",
        *notes,
        f"student {describe_student(cfg, parts.model)}: {n_params:,} parameters, {len(data.classes)} classes, input "
        f"{parts.preprocessing.input_size}px; distillation {cfg.distillation.type}; {len(data.train_set)} train / "
        f"{len(data.val_set)} val images; {parts.steps_per_epoch} steps per epoch x {cfg.epochs} epochs",
        *([f"resuming at epoch {p.epoch + 1}/{cfg.epochs}, batch {p.batch}, step {p.step}"] if resumed else []),
    )


def _tensorboard(cfg: TrainConfig, env: DistEnv, run: RunDir, step: int) -> TensorBoardSink | None:
    if not (env.is_main and wants_tensorboard(cfg.logging.tensorboard)):
        return None
    return TensorBoardSink(run.root, purge_step=step + 1 if step else None)


def _fit(cfg: TrainConfig, env: DistEnv, run: RunDir, parts: RunComponents, clock: Clock) -> dict:
    """The epoch loop with its hooks. A stop signal saves the state and becomes Preempted; a non-finite loss is
    logged and reported before it propagates."""
    trainer, data = parts.trainer, parts.data
    tensorboard = _tensorboard(cfg, env, run, trainer.progress.step)
    checkpointer = Checkpointer(run, env, to_dict(cfg), clock, len(data.train_loader), cfg.save_every,
                                cfg.save_every_minutes)
    hooks = [MetricsLog(run, env, cfg.epochs, cfg.log_every, cfg.eval_every, clock,
                        (data.train_loader, data.val_loader), cfg.data.root, tensorboard), checkpointer]
    if cfg.progress:
        hooks.insert(0, ProgressBar(env, cfg.epochs))
    if cfg.budget_plan is not None:
        hooks.append(BudgetWatch(cfg, env, clock))
    try:
        with StopFlag() as stop:
            trainer.stop = stop
            return trainer.fit(data.train_loader, data.val_loader, cfg.epochs, cfg.eval_every, hooks,
                               total_steps=cfg.total_steps(parts.steps_per_epoch))
    except StopTraining:
        checkpointer.save(trainer)
        if env.is_main:
            run.log({"kind": "event", "event": "preempted", "signal": stop.received or "another rank's",
                     "step": trainer.progress.step, "time": round(time.time(), 1)})
        raise Preempted(stop.received or "a signal to another rank", trainer.progress.step, str(run.state)) from None
    except NonFiniteLossError as exc:
        if env.is_main:
            run.log({"kind": "event", "event": "non_finite_loss", "step": exc.step, "epoch": exc.epoch + 1,
                     "lr": exc.lr, "loss": str(exc.loss), "loss_scale": exc.loss_scale})
            good = f"{run.last} (last good checkpoint)" if run.last.exists() else "none written yet"
            print(f"error: {exc}\nweights kept: {good}", file=sys.stderr, flush=True)
        raise
    finally:
        trainer.stop = None
        if tensorboard is not None:
            tensorboard.close()


def _summary(cfg: TrainConfig, env: DistEnv, run: RunDir, parts: RunComponents, final: dict,
             clock: Clock) -> dict:
    p = parts.trainer.progress
    return {
        "name": cfg.name,
        "run_dir": str(run.root),
        "epochs": cfg.epochs,
        "steps": p.step,
        "world_size": env.world_size,
        "total_batch": parts.total_batch,
        "lr": parts.lr,
        "best_top1": p.best_top1,
        "best_epoch": p.best_epoch,
        "final": final,
        "seconds": round(clock.elapsed(), 2),
        "ranks_identical": ranks_identical(parts.model, env),
    }


def _finish(run: RunDir, env: DistEnv, summary: dict, cfg: TrainConfig, clock: Clock) -> None:
    if not env.is_main:
        return
    try:
        from deit.train.plots import plot_run

        plot_run(run.root)
    except ImportError as exc:  # matplotlib missing: plots are optional
        print(f"plots skipped: {exc}", file=sys.stderr)
    if cfg.budget_plan is not None:  # the run's end, its plots included, against its plan
        summary["budget"] = outcome(cfg, clock.budget_elapsed())
        print(budget_line(summary["budget"]), flush=True)
    run.write_summary(summary)


def _complete(run: RunDir, env: DistEnv, cfg: TrainConfig, state: dict) -> dict | None:
    """The summary of a run whose saved state has trained all its epochs and that wrote it (None: work left)."""
    p = state["progress"]
    if p["epoch"] < cfg.epochs or p["batch"]:
        return None
    return on_main(env, lambda: json.loads(run.summary.read_text()) if run.summary.is_file() else None)


def complete_line(run: RunDir, summary: dict) -> str:
    """What a rerun of a finished run says: its epochs and final top-1, and how to train longer or start over."""
    epochs, final = summary.get("epochs"), summary.get("final") or {}
    result = f"final top-1 {final['top1']:.4f}" if "top1" in final else "no final validation"
    return (f"{run.root} is complete: {epochs} epochs, {result} ({run.summary.name}); nothing to do. To train "
            f"longer: `deit train --resume {run.root} epochs=N` with N > {epochs}; to start over: the same command "
            "with --fresh (the run is moved aside)")


def _train(cfg: TrainConfig, env: DistEnv, model: nn.Module | None, teacher: nn.Module | None,
           resume: bool | str, started: float,
           datasets: tuple[ImageDataset, ImageDataset] | None = None) -> TrainResult:
    clock = Clock(lead=max(0.0, time.perf_counter() - started))
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    cfg, precision = resolve_precision(cfg, env.device)
    cfg, data_line = follow_data_root(cfg)
    check_runtime(cfg, env.device)
    if teacher is None:  # before the data: a missing teacher is said before any download
        check_teacher_checkpoint(cfg)
    mode = {True: "require", False: cfg.resume}.get(resume, resume)
    run, state = open_run(default_output_dir(cfg), cfg, env, mode)
    ok = False
    try:
        check_same_data(run, state, cfg)
        result = _run(cfg, env, run, state, model, teacher, clock, (precision, *([data_line] if data_line else [])),
                      datasets)
        ok = True
        return result
    finally:  # unlocked on every path; a start that saved nothing leaves no directory it made
        if env.is_main:
            run.release(failed=not ok)


def _run(cfg: TrainConfig, env: DistEnv, run: RunDir, state: dict | None, model: nn.Module | None,
         teacher: nn.Module | None, clock: Clock, start_lines: tuple[str, ...],
         datasets: tuple[ImageDataset, ImageDataset] | None = None) -> TrainResult:
    cfg = keep_plan(cfg, state)  # a continued run trains to the plan it started with
    # A continued run takes its data-dependent weights (airbench's whitening) from its state: never recomputed.
    parts = build_components(cfg, env, model, teacher, datasets, init_from_data=state is None)
    done = _complete(run, env, cfg, state) if state is not None else None
    if done is not None:  # rerunning a finished run: say so, write nothing
        parts.model.load_state_dict(state["model"])
        _say(env, complete_line(run, done))
        return TrainResult(run.root, parts.model, done)
    _restore(parts, state, run, env)
    if state is None and cfg.budget_minutes is not None and cfg.budget_plan is None:
        cfg = plan_budget(cfg, env, parts, run.root, clock, lambda line: _say(env, line))
    trainer: Trainer = parts.trainer
    clock.offset = trainer.progress.seconds
    _banner(cfg, env, run, parts, resumed=state is not None)
    _say(env, *start_lines)
    if env.is_main:
        if state is None:
            atomic_write_text(run.config, dump_config(cfg))
        run.log({"kind": "event", "event": "resume" if state else "start", "step": trainer.progress.step,
                 "world_size": env.world_size, "lr": parts.lr, "total_batch": parts.total_batch,
                 "time": round(time.time(), 1)})
    try:
        final = _fit(cfg, env, run, parts, clock)
        if not final and cfg.eval_every >= 0:  # resumed a run that stopped before its summary: evaluate it again
            final = evaluate(parts.model, parts.data.val_loader, env, trainer.task.validation_teacher, cfg.amp,
                             cfg.eval.tta)
    finally:
        parts.data.close()  # however the loop ended, its data workers end with it
    summary = _summary(cfg, env, run, parts, final, clock)
    _finish(run, env, summary, cfg, clock)
    barrier(env)
    return TrainResult(run.root, parts.model, summary)


__all__ = ["TrainResult", "complete_line", "default_output_dir", "describe_student", "train"]
