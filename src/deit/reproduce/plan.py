"""Fitting the study into a time budget by scaling epochs, never by dropping methods.

Cost model: a run of method kind k for E epochs takes ``per_run[k] + E * per_epoch[k]`` seconds (start-up, the
final evaluation and plots; then one epoch of training plus the runner's per-epoch validation). Soft and hard
distillation cost the same, so four kinds cover the six methods (plus the teacher-output cache each seed builds
for its distilled students, which then do not run the teacher): the teacher, DeiT without a distillation token,
with a teacher on the class token, and with a distillation token. The calibration measures both numbers by
running each kind for a few epochs through the same code path as the study (``runs.run_method``), on the same
data: per_epoch from the runner's per-epoch timestamps, per_run as the rest of the wall time.

With several workers the runs overlap: the predicted time is the makespan of the same schedule the study uses
(``execute.run_chains``: teachers first, a seed's students queued when its teacher finishes), simulated with these
costs. The calibration runs on the same number of workers, so its per-epoch costs include the slow-down of
sharing the machine with the other runs.

The plan keeps the regime's teacher/student epoch ratio and scales both by one factor (at most 1: the regime's
schedule is the target, a larger budget does not lengthen it) so that calibration + all runs fill ``SAFETY`` of
the budget: the planner ``deit train --budget-minutes`` uses too (``deit.train.budget``: the cost model, the fit,
the notes). Each run trains at least one epoch: a budget too small for that is reported as exceeded, not met by
skipping methods.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deit.reproduce.execute import CACHE_JOB
from deit.reproduce.methods import METHODS, Method, get_method
from deit.reproduce.regime import Regime
from deit.train.budget import SAFETY, Cost, fit_note, fit_scale, scaled_epochs

CALIBRATION_EPOCHS = 3


@dataclass
class Plan:
    teacher_epochs: int
    student_epochs: int
    scale: float  # fraction of the regime's schedule kept
    budget_seconds: float
    calibration_seconds: float
    predicted_seconds: float  # calibration + every run (0 runs' worth when the epochs were fixed by hand)
    costs: dict[str, Cost] = field(default_factory=dict)
    note: str = ""
    workers: int = 1  # runs at once

    def to_dict(self) -> dict:
        return asdict(self)


def makespan(chains: Sequence[tuple[float, Sequence[float]]], workers: int) -> float:
    """Wall seconds to run ``chains`` ((teacher seconds, [student seconds])) on ``workers`` the way
    ``execute.run_chains`` does: every teacher queued first, a chain's students queued when its teacher ends."""
    free = [0.0] * workers  # when each worker is next free
    queue: list[tuple[float, float, int | None]] = [(0.0, t, i) for i, (t, _) in enumerate(chains)]  # ready at
    end = 0.0
    while queue:
        ready, seconds, chain = queue.pop(0)
        w = min(range(workers), key=free.__getitem__)
        finish = max(free[w], ready) + seconds
        free[w] = finish
        end = max(end, finish)
        if chain is not None:
            queue.extend((finish, s, None) for s in chains[chain][1])
            queue.sort(key=lambda item: item[0])  # stable: FIFO among jobs ready at the same time
    return end


def study_seconds(costs: dict[str, Cost], methods: Sequence[Method], num_seeds: int, teacher_epochs: int,
                  student_epochs: int, workers: int = 1) -> float:
    """Predicted seconds of every run of every seed on ``workers`` (calibration not included)."""
    def seconds(m: Method) -> float:
        return costs[m.cost_kind].seconds(teacher_epochs if m.is_teacher else student_epochs)

    teacher = [m for m in methods if m.is_teacher]
    students = [seconds(m) for m in methods if not m.is_teacher]
    first = seconds(teacher[0]) if teacher else 0.0
    cache = costs.get(CACHE_JOB)  # measured only when the regime builds a cache
    if cache is not None and any(m.token for m in methods):  # the seed's teacher-output cache, before its students
        first += cache.seconds(student_epochs)
    return makespan([(first, students)] * num_seeds, workers)


def plan_epochs(costs: dict[str, Cost], regime: Regime, num_seeds: int, budget_seconds: float,
                calibration_seconds: float = 0.0, methods: Sequence[Method] = METHODS, workers: int = 1) -> Plan:
    """The longest schedule (regime ratio, at most the regime's epochs) whose predicted time fits the budget."""
    def predict(scale: float) -> float:
        t, s = scaled_epochs(scale, regime.teacher_epochs), scaled_epochs(scale, regime.student_epochs)
        return calibration_seconds + study_seconds(costs, methods, num_seeds, t, s, workers)

    scale = fit_scale(predict, SAFETY * budget_seconds)
    teacher_epochs = scaled_epochs(scale, regime.teacher_epochs)
    student_epochs = scaled_epochs(scale, regime.student_epochs)
    predicted = predict(scale)
    note = fit_note(scale, predicted, budget_seconds, owner="the regime", shortest="one epoch per run",
                    fix="raise --budget-minutes or use fewer seeds")
    return Plan(teacher_epochs, student_epochs, scale, budget_seconds, calibration_seconds, predicted, costs, note,
                workers)


def fixed_plan(teacher_epochs: int, student_epochs: int, regime: Regime, budget_seconds: float, workers: int = 1
               ) -> Plan:
    """Epochs given by hand (``--epochs``): no calibration, no prediction."""
    if teacher_epochs < 1 or student_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got teacher {teacher_epochs}, student {student_epochs}")
    scale = student_epochs / regime.student_epochs
    return Plan(teacher_epochs, student_epochs, scale, budget_seconds, 0.0, 0.0, {},
                "epochs fixed by --epochs: no calibration, the budget is not enforced", workers)


def run_cost(marks: Sequence[float], seconds: float, validates_last: bool = True) -> Cost:
    """The cost model of one calibration run from the cumulative seconds at each epoch's end (``marks``) and its
    wall ``seconds``. The first epoch carries one-off costs (first calls, allocations) and, in a training run, the
    last one the validation (the study's runs validate after their last epoch only; on CIFAR's 10,000 test images
    that is 2-3 training epochs' worth of 1,000 images), so the epochs between them are timed; the rest is per-run."""
    marks = list(marks)
    inner = marks[:-1] if validates_last and len(marks) > 2 else marks
    per_epoch = (inner[-1] - inner[0]) / (len(inner) - 1) if len(inner) > 1 else inner[0]
    return Cost(per_epoch=round(per_epoch, 3), per_run=round(max(0.0, seconds - len(marks) * per_epoch), 3))


def calibrate(regime: Regime, root: Path, seed: int = 0, log: Callable[[str], None] = print, workers: int = 1
              ) -> tuple[dict[str, Cost], float]:
    """Time each method kind for ``CALIBRATION_EPOCHS`` epochs under ``root`` on ``workers`` (the study's);
    ({kind: Cost}, seconds spent)."""
    from deit.reproduce.execute import Chain, Job, JobResult, run_chains

    start = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    kinds: dict[str, Method] = {}
    for m in METHODS:
        kinds.setdefault(m.cost_kind, m)
    teacher = next(m for m in kinds.values() if m.is_teacher)
    teacher_job = Job(teacher.name, seed, CALIBRATION_EPOCHS, root / teacher.cost_kind, regime)
    checkpoint = teacher_job.run_dir / "last.safetensors"
    cache = Job(CACHE_JOB, seed, CALIBRATION_EPOCHS, root / CACHE_JOB, regime, teacher_checkpoint=checkpoint)
    students = [Job(m.name, seed, CALIBRATION_EPOCHS, root / kind, regime, teacher_checkpoint=checkpoint,
                    teacher_cache=cache.run_dir if m.token and regime.teacher_cache else None)
                for kind, m in kinds.items() if not m.is_teacher]
    costs: dict[str, Cost] = {}

    def measured(result: JobResult) -> None:
        kind = CACHE_JOB if result.job.is_cache else get_method(result.job.method).cost_kind
        costs[kind] = run_cost(result.epoch_seconds, result.seconds, validates_last=not result.job.is_cache)
        log(f"calibration {kind}: {costs[kind].per_epoch:.2f} s/epoch + {costs[kind].per_run:.1f} s/run")

    run_chains([Chain(teacher_job, students, cache if regime.teacher_cache else None)], workers, measured)
    return costs, time.perf_counter() - start


__all__ = ["CALIBRATION_EPOCHS", "SAFETY", "Cost", "Plan", "calibrate", "fixed_plan", "makespan", "plan_epochs",
           "run_cost", "study_seconds"]
