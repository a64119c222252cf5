"""One run of the study: a method's training config, trained quietly in-process by the training runner, then
evaluated head by head on the validation split (top-1, top-5, agreement with the teacher).

Each run directory is an ordinary ``deit train`` run (config.yaml, metrics.jsonl, checkpoints, plots) plus
``train.log``, the runner's console output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deit.data import build_loader
from deit.inference.evaluation import TeacherFn, evaluate
from deit.inference.teacher import Teacher
from deit.models.contract import has_two_heads
from deit.models.preprocessing import Preprocessing
from deit.reproduce.methods import HEADS, METHODS, Method
from deit.reproduce.regime import Regime
from deit.reproduce.replay import PREDICTIONS_FILE, ReplayedTeacher, record_predictions, replayed_teacher
from deit.runtime.distributed import DistEnv
from deit.train.cache_build import student_preprocessing
from deit.train.config import TrainConfig
from deit.train.presets import load_config


@dataclass
class RunOutcome:
    rows: list[dict]  # one per reported head: method, seed, top1, top5, agreement, seconds
    model: nn.Module  # the final weights (the paper reports the last epoch, and val is the test split here)
    run_dir: Path
    seconds: float  # wall time of training and evaluation
    epoch_seconds: list[float]  # the runner's cumulative seconds at the end of each epoch


def method_config(method: Method, regime: Regime, *, seed: int, epochs: int, run_dir: Path,
                  teacher_checkpoint: Path | None = None, teacher_cache: Path | None = None) -> TrainConfig:
    """The full training config of ``method``: preset, then the regime, the method, and this run's settings.
    ``teacher_cache``: the seed's teacher-output cache, which the distilled students read instead of the teacher."""
    overrides = [*regime.data_overrides()]
    if not method.is_teacher:
        # The regime's student overrides (where the user's --set/--student-set end up) come after the method's:
        # what the user sets wins, e.g. another distillation.tau for the soft methods.
        overrides += [*method.overrides, *regime.student]
        if method.token is None:
            overrides.append("teacher.checkpoint=null")
        elif teacher_checkpoint is None:
            raise ValueError(f"{method.name} distils from a teacher: give its checkpoint")
        else:
            overrides.append(f"teacher.checkpoint={teacher_checkpoint}")
            if teacher_cache is not None:
                overrides.append(f"distillation.teacher_cache={teacher_cache}")
    # eval_every=-1: the runner does not validate (the study evaluates every head itself, once; at a
    # few hundred training images per-epoch validation would cost about as much as the training).
    # budget_minutes=null: the study plans every run's epochs itself (a preset's own budget would re-plan them).
    overrides += [f"name={method.name}", f"seed={seed}", f"epochs={epochs}", f"output_dir={run_dir}",
                  "progress=false", "log_every=0", "eval_every=-1", "budget_minutes=null"]
    return load_config(regime.teacher_preset if method.is_teacher else regime.student_preset, overrides)


EVAL_BATCH = 256  # evaluation only: bigger batches, fewer per-batch overheads


def val_loader(cfg: TrainConfig, preprocessing: Preprocessing):
    """The validation split of ``cfg``'s data in the data set's order, for a model with ``preprocessing``."""
    data = dataclasses.replace(cfg.data, batch_size=EVAL_BATCH)
    return build_loader(data, "val", preprocessing=preprocessing, seed=cfg.seed, distributed=False)


@torch.no_grad()
def evaluate_heads(method: Method, cfg: TrainConfig, model: nn.Module, teacher: TeacherFn | None
                   ) -> dict[str, dict[str, float]]:
    """{row name: {top1, top5, agreement}} on the whole validation split, in one pass. A two-head student
    reports its class head, distillation head and their average (the model's prediction). The agreement of a
    student is with ``teacher`` (a live ``Teacher`` or a ``ReplayedTeacher``; for every student, distilled or
    not; the teacher's own row has 1)."""
    device = next(model.parameters()).device
    metrics = evaluate(model, val_loader(cfg, model.preprocessing), DistEnv(device=device), teacher)
    if isinstance(teacher, ReplayedTeacher):
        teacher.finish()
    if has_two_heads(model):
        return {f"{method.name}-{head}": head_row(metrics, head) for head in HEADS}
    return {method.name: head_row(metrics)}


def head_row(metrics: dict, head: str | None = None) -> dict[str, float]:
    """A results.json row's figures from ``evaluate``'s metrics: one head's (None: the model's prediction) top-1,
    top-5 and agreement with the teacher (1 when there is no teacher: the teacher's own row)."""
    suffix = f"_{head}" if head else ""
    return {"top1": metrics[f"top1{suffix}"], "top5": metrics[f"top5{suffix}"],
            "agreement": metrics.get(f"agreement{suffix}", 1.0)}


def train_quietly(cfg: TrainConfig, resume: bool = False):
    """``deit.train.train(cfg)`` with its console output kept in ``RUN_DIR/train.log`` instead of printed;
    ``resume``: a resumed study: the run continues its saved state, if any, appending to the log."""
    from deit.train.runner import train

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            return train(cfg, resume="continue" if resume else False)
    finally:
        run_dir = Path(cfg.output_dir)
        if run_dir.is_dir():
            with open(run_dir / "train.log", "a" if resume else "w") as f:
                f.write(buf.getvalue())


def build_teacher_cache(regime: Regime, *, seed: int, epochs: int, output: Path, teacher_checkpoint: Path,
                        quiet: bool = True) -> tuple[float, list[float]]:
    """The seed's teacher-output cache: the students' common data stream through its teacher, logits kept (they
    serve the soft and the hard students alike); returns (seconds, cumulative seconds after each epoch's part)."""
    from deit.train.cache_build import BuildOptions, build_cache

    start = time.perf_counter()
    student = next(m for m in METHODS if m.distillation == "soft")
    cfg = method_config(student, regime, seed=seed, epochs=epochs, run_dir=output.parent / "unused",
                        teacher_checkpoint=teacher_checkpoint)
    marks: list[float] = []
    options = BuildOptions(outputs="logits", progress=False,
                           on_part=lambda epoch, rank: marks.append(time.perf_counter() - start))
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        build_cache(cfg, output, options)
    return time.perf_counter() - start, marks


def epoch_seconds(run_dir: Path) -> list[float]:
    """The runner's cumulative seconds at each epoch's end (from metrics.jsonl)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "epoch":
            out.append(float(record["seconds"]))
    return out


def record_for_students(teacher: nn.Module, regime: Regime, *, seed: int, run_dir: Path) -> None:
    """The teacher's predictions on the students' validation loader, for their agreement (``replay``)."""
    student = next(m for m in METHODS if not m.is_teacher)
    cfg = method_config(student, regime, seed=seed, epochs=1, run_dir=run_dir / "unused")
    preprocessing = student_preprocessing(cfg)
    record_predictions(teacher, val_loader(cfg, preprocessing), preprocessing, run_dir / PREDICTIONS_FILE)


def student_teacher(student: nn.Module, teacher: nn.Module | None, checkpoint: Path | None) -> TeacherFn | None:
    """What a student's agreement is measured against: its teacher's recorded predictions when they match its
    preprocessing, else the teacher itself (``teacher``, or read from ``checkpoint``)."""
    if checkpoint is not None:
        replay = replayed_teacher(checkpoint.parent / PREDICTIONS_FILE, student.preprocessing)
        if replay is not None:
            return replay
    if teacher is None and checkpoint is not None:
        from deit.checkpoints import load_checkpoint

        teacher = load_checkpoint(checkpoint)
    device = next(student.parameters()).device
    return Teacher(teacher.to(device)) if teacher is not None else None


def run_method(method: Method, regime: Regime, *, seed: int, epochs: int, run_dir: Path,
               teacher: nn.Module | None = None, teacher_checkpoint: Path | None = None,
               teacher_cache: Path | None = None, resume: bool = False) -> RunOutcome:
    """Train ``method`` for ``epochs`` in ``run_dir`` and evaluate it; ``teacher`` (the frozen module of
    ``teacher_checkpoint``, read from it when not given) gives the agreement of every student. ``resume``:
    continue from the run directory's saved training state (an interrupted study), bit-exact."""
    start = time.perf_counter()
    cfg = method_config(method, regime, seed=seed, epochs=epochs, run_dir=run_dir,
                        teacher_checkpoint=teacher_checkpoint, teacher_cache=teacher_cache)
    result = train_quietly(cfg, resume=resume)
    if method.is_teacher:
        metrics = evaluate_heads(method, cfg, result.model, None)
        record_for_students(result.model, regime, seed=seed, run_dir=run_dir)
    else:
        metrics = evaluate_heads(method, cfg, result.model,
                                 student_teacher(result.model, teacher, teacher_checkpoint))
    seconds = time.perf_counter() - start
    rows = [{"method": row, "seed": seed, **values, "seconds": round(seconds, 2)} for row, values in metrics.items()]
    return RunOutcome(rows, result.model, result.run_dir, seconds, epoch_seconds(result.run_dir))


__all__ = [
    "RunOutcome",
    "build_teacher_cache",
    "epoch_seconds",
    "evaluate_heads",
    "head_row",
    "method_config",
    "run_method",
    "train_quietly",
]
