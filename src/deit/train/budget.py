"""Fitting a schedule into a time budget: the one planner of ``deit train`` (``budget_minutes``) and ``deit
reproduce`` (``--budget-minutes``).

Both keep the configured schedule as the target and scale it down by one factor (at most 1: a larger budget never
lengthens it), the largest whose predicted seconds fill ``SAFETY`` of the budget (:func:`fit_scale`). A run's
cost is linear in its epochs (:class:`Cost`: ``per_run + epochs * per_epoch``), measured on the run's own code
path: ``deit reproduce`` runs each kind of run for a few epochs (``deit.reproduce.plan``), ``deit train`` times
a few of its own steps, a validation and a save (``deit.train.calibration``) and plans here (:func:`plan_run`).

A training run's prediction for S optimizer steps (E = ceil(S / steps per epoch) epochs, the last one cut short
where the budget ends inside it): what its process spent before training (imports, start-up, the calibration) + S
steps + the validations ``eval_every`` makes in E epochs + its saves (one per epoch, plus ``save_every`` and
``save_every_minutes`` ones) + its end (the plots). The plan is the most steps that fit, so no budget is left
unused for want of a whole epoch; the last epoch validates and saves as a whole one does. Warm-up keeps its share
of the schedule: ``warmup_epochs x S / (epochs x steps per epoch)`` (at least one step when there was a warm-up);
the cosine runs over the S steps. ``deit reproduce`` plans whole epochs (its methods compare at equal epochs). A
budget that does not fit one epoch is an error naming the time one epoch needs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from deit.runtime.typedconfig import from_dict
from deit.train.config import BudgetPlan, ConfigError, TrainConfig
from deit.train.engine import validates

# Share of the budget a plan fills: the machine may be shared and timings drift during a long run.
SAFETY = 0.9


@dataclass
class Cost:
    per_epoch: float  # seconds
    per_run: float  # seconds

    def seconds(self, epochs: float) -> float:
        return self.per_run + epochs * self.per_epoch


def fit_scale(predict: Callable[[float], float], target_seconds: float) -> float:
    """The largest scale in [0, 1] of the configured schedule whose ``predict(scale)`` seconds fit
    ``target_seconds`` (1: the full schedule fits; 0: nothing does). ``predict`` grows with the scale."""
    if predict(1.0) <= target_seconds:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(40):  # bisection
        mid = (low + high) / 2
        low, high = (mid, high) if predict(mid) <= target_seconds else (low, mid)
    return low


def scaled_epochs(scale: float, epochs: int) -> int:
    """Epochs of a schedule of ``epochs`` scaled by ``scale``: at least one."""
    return max(1, math.floor(scale * epochs))


def fit_note(scale: float, predicted_seconds: float, budget_seconds: float, *, owner: str, shortest: str,
             fix: str) -> str:
    """What the plan did, in words: the full schedule of ``owner`` fits, it was scaled, or even the ``shortest``
    schedule is over budget (then ``fix``)."""
    if scale >= 1.0:
        return f"{owner}'s full schedule fits the budget"
    if predicted_seconds > budget_seconds:
        return f"over budget: even {shortest} needs about {predicted_seconds / 60:.1f} min; {fix}"
    return f"schedule scaled to {scale:.0%} of {owner}'s to fit the budget"


# --------------------------------------------------------------------------------------------- one training run
@dataclass
class Measurement:
    """What a run's calibration measured (``deit.train.calibration.measure``), on rank 0."""

    steps: int  # optimizer steps run, the untimed first ones included
    step_seconds: float  # one optimizer step in the steady state
    first_step_seconds: float  # the first one: the loader's start and first calls
    images_per_step: int  # over every rank
    validation_seconds: float  # one validation of the whole val set (0: the run never validates)
    save_seconds: float  # one save of the weights and the training state
    finish_seconds: float  # what the run does after its last epoch: its plots
    seconds: float  # the calibration's own wall time


@dataclass(frozen=True)
class RunShape:
    """What of a run's config its time depends on besides the measurement."""

    steps_per_epoch: int
    eval_every: int
    save_every: int = 0
    save_every_minutes: float = 0.0
    loader_restarts: bool = False  # the train loader starts its workers anew each epoch

    @classmethod
    def of(cls, cfg: TrainConfig, steps_per_epoch: int) -> RunShape:
        data = cfg.data
        return cls(steps_per_epoch, cfg.eval_every, cfg.save_every, cfg.save_every_minutes,
                   data.num_workers > 0 and not data.persistent_workers)


def _validations(epochs: int, eval_every: int) -> int:
    return sum(validates(e, epochs, eval_every) for e in range(1, epochs + 1))


def run_seconds(m: Measurement, shape: RunShape, steps: int, startup_seconds: float) -> tuple[float, int, int]:
    """(predicted wall seconds of the whole run, its validations, its saves) for ``steps`` optimizer steps (the
    last epoch partial if they end inside one), after ``startup_seconds`` spent before the first one."""
    epochs = math.ceil(steps / shape.steps_per_epoch)
    restart = max(0.0, m.first_step_seconds - m.step_seconds) if shape.loader_restarts else 0.0
    training = steps * m.step_seconds + epochs * restart
    saves = epochs  # every epoch's end
    if shape.save_every:
        saves += steps // shape.save_every
    if shape.save_every_minutes:
        saves += int(training // (60 * shape.save_every_minutes))
    validations = _validations(epochs, shape.eval_every)
    total = (startup_seconds + training + validations * m.validation_seconds + saves * m.save_seconds
             + m.finish_seconds)
    return total, validations, saves


def planned_warmup(warmup_epochs: float, epochs: float, requested_epochs: int, steps_per_epoch: int) -> float:
    """Warm-up of a schedule shortened from ``requested_epochs`` to ``epochs``: the same share of it, at least one
    step when there was a warm-up."""
    if epochs >= requested_epochs or warmup_epochs <= 0:
        return warmup_epochs
    return max(warmup_epochs * epochs / requested_epochs, 1 / steps_per_epoch)


def too_small(budget_minutes: float, one_epoch_seconds: float, steps_per_epoch: int) -> ConfigError:
    need = math.ceil(one_epoch_seconds / SAFETY / 60 * 10) / 10
    return ConfigError(
        f"budget_minutes={budget_minutes:g} does not fit one epoch: start-up and one epoch of {steps_per_epoch} steps "
        f"(with its validation and save) take about {one_epoch_seconds / 60:.1f} min here; give budget_minutes="
        f"{need:g} or more, or make an epoch shorter (fewer images, a smaller model)")


def plan_run(cfg: TrainConfig, m: Measurement, steps_per_epoch: int, startup_seconds: float,
             now: float | None = None) -> TrainConfig:
    """``cfg`` (``budget_minutes`` set) planned from the calibration ``m`` and the seconds spent so far: the most
    optimizer steps, up to ``cfg.epochs`` epochs of them, whose predicted run fits ``SAFETY`` of the budget (one
    epoch when only the whole budget holds it; a ConfigError when not even that), with its plan (``budget_plan``)."""
    assert cfg.budget_minutes is not None
    budget = 60.0 * cfg.budget_minutes
    shape = RunShape.of(cfg, steps_per_epoch)
    requested_steps = cfg.epochs * steps_per_epoch
    steps_at = lambda scale: max(steps_per_epoch, math.floor(scale * requested_steps))  # noqa: E731
    scale = fit_scale(lambda s: run_seconds(m, shape, steps_at(s), startup_seconds)[0], SAFETY * budget)
    steps = steps_at(scale)
    seconds, validations, saves = run_seconds(m, shape, steps, startup_seconds)
    if seconds > budget:
        raise too_small(cfg.budget_minutes, seconds, steps_per_epoch)
    now = time.time() if now is None else now
    plan = BudgetPlan(
        budget_minutes=cfg.budget_minutes, requested_epochs=cfg.epochs,
        requested_warmup_epochs=cfg.schedule.warmup_epochs, steps_per_epoch=steps_per_epoch, steps=steps,
        step_seconds=round(m.step_seconds, 4), images_per_s=round(m.images_per_step / max(m.step_seconds, 1e-9), 1),
        calibration_steps=m.steps, calibration_seconds=round(m.seconds, 2),
        validation_seconds=round(m.validation_seconds, 2), validations=validations,
        save_seconds=round(m.save_seconds, 2), saves=saves, finish_seconds=round(m.finish_seconds, 2),
        startup_seconds=round(startup_seconds, 2),
        predicted_minutes=round(seconds / 60, 2),
        expected_end=time.strftime("%Y-%m-%d %H:%M", time.localtime(now + seconds - startup_seconds)),
        note=fit_note(steps / requested_steps, seconds, budget, owner="the config", shortest="one epoch",
                      fix="raise budget_minutes"),
    )
    return apply_plan(cfg, plan)


def apply_plan(cfg: TrainConfig, plan: BudgetPlan) -> TrainConfig:
    """``cfg`` trained for the plan's steps (its epochs: those they reach into), its warm-up shortened with the
    schedule, ``plan`` recorded."""
    spe = plan.steps_per_epoch
    warmup = planned_warmup(plan.requested_warmup_epochs, plan.steps / spe, plan.requested_epochs, spe)
    return replace(cfg, epochs=math.ceil(plan.steps / spe), schedule=replace(cfg.schedule, warmup_epochs=warmup),
                   budget_plan=plan)


def requested(config: dict) -> dict:
    """A config dict as it was asked for: a plan's epochs and warm-up back to the requested ones, the plan gone.
    The resume policy compares these, so the unchanged command line of a planned run continues it."""
    plan = config.get("budget_plan")
    if not plan:
        return config
    out = copy.deepcopy(config)
    out["epochs"] = plan["requested_epochs"]
    out.setdefault("schedule", {})["warmup_epochs"] = plan["requested_warmup_epochs"]
    out["budget_plan"] = None
    return out


def keep_plan(cfg: TrainConfig, state: dict | None) -> TrainConfig:
    """``cfg`` of a run that continues a saved ``state``: with a budget and no plan of its own (the unchanged
    command line), the plan the state was trained with, its epochs and warm-up included; never a new plan."""
    if state is None or cfg.budget_minutes is None or cfg.budget_plan is not None:
        return cfg
    saved = state.get("config", {})
    if not saved.get("budget_plan"):
        raise ConfigError("budget_minutes plans a run when it starts, and this run was started without it (its "
                          "epochs are fixed): drop budget_minutes to continue it, or start over with --fresh")
    plan = from_dict(BudgetPlan, saved["budget_plan"], prefix="budget_plan.")
    cfg = replace(cfg, budget_minutes=plan.budget_minutes, budget_plan=plan, epochs=saved["epochs"],
                  schedule=replace(cfg.schedule, warmup_epochs=saved["schedule"]["warmup_epochs"]))
    return cfg.validate()


def plan_line(cfg: TrainConfig) -> str:
    """The plan of a planned ``cfg`` in one line: what was measured, the epochs chosen, the expected end."""
    p = cfg.budget_plan
    assert p is not None
    rate = 1 / max(p.step_seconds, 1e-9)
    measured = (f"calibration {p.calibration_seconds:.0f} s ({p.calibration_steps} steps, {rate:.3g} steps/s, "
                f"{p.images_per_s:.0f} img/s), validation {p.validation_seconds:.1f} s, save {p.save_seconds:.1f} s")
    spe, steps = p.steps_per_epoch, cfg.total_steps(p.steps_per_epoch)
    whole, last = divmod(steps, spe)
    if steps >= p.requested_epochs * spe:
        fit = (f"the configured {cfg.epochs} epochs x {spe} steps fit (epochs is the cap: raise it to use more of "
               "the budget)")
    elif last:
        epochs = f"{whole} epoch" + ("s" if whole != 1 else "")
        fit = (f"{epochs} and {last} of {spe} steps ({steps / spe:.2f} of the configured {p.requested_epochs} epochs, "
               f"the last cut short) fit (warm-up {cfg.schedule.warmup_epochs:.3g} epochs)")
    else:
        fit = (f"{whole} of the configured {p.requested_epochs} epochs x {spe} steps fit "
               f"(warm-up {cfg.schedule.warmup_epochs:.3g} epochs)")
    return (f"budget {p.budget_minutes:g} min: {measured}; {fit}; predicted {_minutes(p.predicted_minutes)} min, "
            f"ending ~{p.expected_end[-5:]}")


def outcome(cfg: TrainConfig, seconds: float) -> dict:
    """Planned against actual minutes (the run's wall ``seconds``), for the run's summary."""
    p = cfg.budget_plan
    assert p is not None
    return {"budget_minutes": p.budget_minutes, "planned_minutes": p.predicted_minutes,
            "actual_minutes": round(seconds / 60, 2)}


def budget_line(summary_budget: dict) -> str:
    b = summary_budget
    return (f"budget {b['budget_minutes']:g} min: planned {_minutes(b['planned_minutes'])} min, actual "
            f"{_minutes(b['actual_minutes'])} min")


def _minutes(m: float) -> str:
    return f"{m:.1f}" if m >= 10 else f"{m:.2f}"


__all__ = ["SAFETY", "Cost", "Measurement", "RunShape", "apply_plan", "budget_line", "fit_note", "fit_scale",
           "keep_plan", "outcome", "plan_line", "plan_run", "planned_warmup", "requested", "run_seconds",
           "scaled_epochs", "too_small"]
