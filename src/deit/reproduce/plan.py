"""Fitting the study into a time budget by scaling epochs, never by dropping methods.

Cost model: a run of method kind k for E epochs takes ``per_run[k] + E * per_epoch[k]`` seconds (start-up, the
final evaluation and plots; then one epoch of training plus the runner's per-epoch validation). Soft and hard
distillation cost the same, so four kinds cover the six methods: the teacher, DeiT without a distillation token,
with a teacher on the class token, and with a distillation token. The calibration measures both numbers by
running each kind for a few epochs through the same code path as the study (``runs.run_method``), on the same
data: per_epoch from the runner's per-epoch timestamps, per_run as the rest of the wall time.

The plan keeps the regime's teacher/student epoch ratio and scales both by one factor (at most 1: the regime's
schedule is the target, a larger budget does not lengthen it) so that calibration + all runs fill ``SAFETY`` of
the budget. Each run trains at least one epoch: a budget too small for that is reported as exceeded, not met by
skipping methods.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deit.reproduce.methods import METHODS, Method
from deit.reproduce.regime import Regime

CALIBRATION_EPOCHS = 3
# Share of the budget the plan fills: the CPU may be shared and timings drift during a long study.
SAFETY = 0.9


@dataclass
class Cost:
    per_epoch: float  # seconds
    per_run: float  # seconds


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

    def to_dict(self) -> dict:
        return asdict(self)


def run_seconds(costs: dict[str, Cost], methods: Sequence[Method], teacher_epochs: int, student_epochs: int) -> float:
    """Predicted seconds of one seed: every method once."""
    total = 0.0
    for m in methods:
        c = costs[m.cost_kind]
        total += c.per_run + (teacher_epochs if m.is_teacher else student_epochs) * c.per_epoch
    return total


def plan_epochs(costs: dict[str, Cost], regime: Regime, num_seeds: int, budget_seconds: float,
                calibration_seconds: float = 0.0, methods: Sequence[Method] = METHODS) -> Plan:
    """The longest schedule (regime ratio, at most the regime's epochs) whose predicted time fits the budget."""
    fixed = num_seeds * sum(costs[m.cost_kind].per_run for m in methods)
    per_unit = num_seeds * run_seconds({k: Cost(c.per_epoch, 0.0) for k, c in costs.items()}, methods,
                                       regime.teacher_epochs, regime.student_epochs)  # at scale 1
    available = SAFETY * budget_seconds - calibration_seconds - fixed
    scale = min(1.0, max(0.0, available / per_unit)) if per_unit > 0 else 1.0
    teacher_epochs = max(1, math.floor(scale * regime.teacher_epochs))
    student_epochs = max(1, math.floor(scale * regime.student_epochs))
    predicted = calibration_seconds + num_seeds * run_seconds(costs, methods, teacher_epochs, student_epochs)
    if scale >= 1.0:
        note = "the regime's full schedule fits the budget"
    elif predicted > budget_seconds:
        note = (f"over budget: even one epoch per run needs about {predicted / 60:.1f} min; "
                "raise --budget-minutes or use fewer seeds")
    else:
        note = f"schedule scaled to {scale:.0%} of the regime's to fit the budget"
    return Plan(teacher_epochs, student_epochs, scale, budget_seconds, calibration_seconds, predicted, costs, note)


def fixed_plan(teacher_epochs: int, student_epochs: int, regime: Regime, budget_seconds: float) -> Plan:
    """Epochs given by hand (``--epochs``): no calibration, no prediction."""
    if teacher_epochs < 1 or student_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got teacher {teacher_epochs}, student {student_epochs}")
    scale = student_epochs / regime.student_epochs
    return Plan(teacher_epochs, student_epochs, scale, budget_seconds, 0.0, 0.0, {},
                "epochs fixed by --epochs: no calibration, the budget is not enforced")


def calibrate(regime: Regime, root: Path, seed: int = 0, log: Callable[[str], None] = print
              ) -> tuple[dict[str, Cost], float]:
    """Time each method kind for ``CALIBRATION_EPOCHS`` epochs under ``root``; ({kind: Cost}, seconds spent)."""
    from deit.reproduce.runs import run_method

    start = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    kinds: dict[str, Method] = {}
    for m in METHODS:
        kinds.setdefault(m.cost_kind, m)
    costs: dict[str, Cost] = {}
    teacher, teacher_ckpt = None, None
    for kind, method in kinds.items():
        run = run_method(method, regime, seed=seed, epochs=CALIBRATION_EPOCHS, run_dir=root / kind,
                         teacher=teacher, teacher_checkpoint=teacher_ckpt)
        if method.is_teacher:
            teacher, teacher_ckpt = run.model, run.run_dir / "last.safetensors"
        marks = run.epoch_seconds
        # The first epoch carries one-off costs (first calls, allocations): time the later ones.
        per_epoch = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else marks[0]
        costs[kind] = Cost(per_epoch=round(per_epoch, 3),
                           per_run=round(max(0.0, run.seconds - len(marks) * per_epoch), 3))
        log(f"calibration {kind}: {per_epoch:.2f} s/epoch + {costs[kind].per_run:.1f} s/run")
    return costs, time.perf_counter() - start


__all__ = ["CALIBRATION_EPOCHS", "SAFETY", "Cost", "Plan", "calibrate", "fixed_plan", "plan_epochs", "run_seconds"]
