"""budget_minutes: a run plans its epochs from a calibration of its own steps, trains as an unbudgeted run of those
epochs would, keeps its plan when it resumes, says so when the budget is too small, and under torchrun every rank
trains rank 0's plan. Timings are injected wherever a number is asserted: nothing here depends on the CPU's speed."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.runtime.distributed import DistEnv
from deit.runtime.typedconfig import ConfigError, to_dict
from deit.train import budget, calibration, load_config, train
from deit.train.budget import SAFETY, Measurement, keep_plan, plan_run, requested, run_seconds
from deit.train.components import build_components
from deit.train.config import TrainConfig
from deit.train.hooks import Checkpointer
from deit.train.resume import config_differences

# 1 s per optimizer step, a 20-s validation, 0.5-s saves, 2 s of plots.
MEASURED = Measurement(steps=12, step_seconds=1.0, first_step_seconds=3.0, images_per_step=64,
                       validation_seconds=20.0, save_seconds=0.5, finish_seconds=2.0, seconds=15.0)
STARTUP = 30.0


def _cfg(epochs: int = 300, minutes: float = 10.0, **fields) -> TrainConfig:
    cfg = TrainConfig(epochs=epochs, budget_minutes=minutes, save_every_minutes=0.0, **fields)
    return replace(cfg, schedule=replace(cfg.schedule, warmup_epochs=5.0))


# ------------------------------------------------------------------------------------------------ the planning
def test_the_plan_fills_the_budget_with_the_most_epochs_that_fit():
    planned = plan_run(_cfg(), MEASURED, steps_per_epoch=50, startup_seconds=STARTUP, now=0.0)
    # An epoch: 50 steps + a validation + a save = 70.5 s; 30 s start-up + 2 s plots. 0.9 x 600 s holds 7 epochs
    # (525.5 s); not even one step of an 8th (its validation and save come with it: 547 s).
    assert (planned.epochs, planned.budget_plan.steps, planned.total_steps(50)) == (7, 350, 350)
    plan = planned.budget_plan
    assert plan.predicted_minutes == pytest.approx(525.5 / 60, abs=0.01)
    assert (plan.requested_epochs, plan.requested_warmup_epochs, plan.validations, plan.saves) == (300, 5.0, 7, 7)
    assert run_seconds(MEASURED, budget.RunShape(50, 1), 351, STARTUP)[0] == pytest.approx(547.0)
    # Warm-up keeps its share of the schedule; the cosine follows the planned epochs.
    assert planned.schedule.warmup_epochs == pytest.approx(5.0 * 7 / 300)
    assert planned.budget_minutes == 10.0 and plan.budget_minutes == 10.0


def test_validations_and_saves_the_run_will_make_are_counted():
    def steps(**fields) -> int:
        return plan_run(_cfg(**fields), MEASURED, 50, STARTUP).budget_plan.steps

    # 540 s - 32 s of start-up and plots, steps at 1 s, 0.5 s per epoch's save, 20 s per validation:
    # eval_every=0 validates once: 483 steps (10 epochs, 488 s); -1 never: 502 (11 epochs, 507.5 s); 2 at epochs
    # 2, 4, 6, 8 and the last: 403 (9 epochs, 507.5 s); save_every=10 adds a save per 10 steps: 347 (7 epochs).
    assert (steps(eval_every=0), steps(eval_every=-1), steps(eval_every=2)) == (483, 502, 403)
    assert steps(save_every=10) == 347
    assert run_seconds(MEASURED, budget.RunShape(50, 1, save_every=10), 50, 0)[2] == 6
    minutes = budget.RunShape(50, 1, save_every_minutes=1.0)
    assert run_seconds(MEASURED, minutes, 300, 0)[2] == 6 + 5  # 300 s of steps: a save every 60 s


def test_the_last_epoch_is_cut_short_rather_than_leave_the_budget_unused():
    # Never validating, 11 whole epochs (550 steps) would need 587.5 s of the 540: 10 epochs and 2 steps of an
    # 11th are planned. The schedule (warm-up and cosine) is the 502 steps; the epochs are those they reach into.
    planned = plan_run(_cfg(eval_every=-1), MEASURED, 50, STARTUP)
    assert (planned.epochs, planned.total_steps(50)) == (11, 502)
    assert planned.schedule.warmup_epochs == pytest.approx(5.0 * 502 / (300 * 50))
    assert "10 epochs and 2 of 50 steps (10.04 of the configured 300 epochs, the last cut short) fit" in \
        budget.plan_line(planned)
    one = plan_run(_cfg(minutes=1.7, eval_every=-1), MEASURED, 50, STARTUP)  # 91.8 s: 32 + 58 + 2 saves
    assert "; 1 epoch and 8 of 50 steps (1.16 of the configured 300 epochs" in budget.plan_line(one)
    # A continuation given more epochs than planned trains them whole; a plan from before partial epochs (no
    # steps) trains whole epochs.
    assert replace(planned, epochs=12).total_steps(50) == 600
    assert replace(planned, budget_plan=replace(planned.budget_plan, steps=0)).total_steps(50) == 550


def test_epochs_is_the_cap_and_a_short_warmup_keeps_one_step():
    full = plan_run(_cfg(epochs=4, minutes=60), MEASURED, 50, STARTUP)
    assert (full.epochs, full.schedule.warmup_epochs) == (4, 5.0)
    assert "full schedule fits" in full.budget_plan.note
    assert budget.planned_warmup(0.5, 1, 300, steps_per_epoch=12) == pytest.approx(1 / 12)
    assert budget.planned_warmup(0.0, 1, 300, steps_per_epoch=12) == 0.0


def test_a_budget_too_small_for_one_epoch_names_the_time_it_needs():
    # One epoch: 30 + 70.5 + 2 = 102.5 s. A 1-minute budget cannot hold it: 102.5 / 0.9 s = 1.9 min are needed.
    with pytest.raises(ConfigError) as err:
        plan_run(_cfg(minutes=1), MEASURED, 50, STARTUP)
    assert "budget_minutes=1 does not fit one epoch" in str(err.value) and "1.7 min" in str(err.value)
    assert "budget_minutes=1.9 or more" in str(err.value)
    # Within the budget but not its safety margin: one epoch, planned.
    assert plan_run(_cfg(minutes=1.75), MEASURED, 50, STARTUP).epochs == 1


def test_a_planned_config_is_compared_as_it_was_asked_for():
    asked = _cfg(epochs=300)
    planned = plan_run(asked, MEASURED, 50, STARTUP)
    saved = yaml.safe_load(yaml.safe_dump(to_dict(planned)))  # as config.yaml holds it
    assert saved["epochs"] == 7 and saved["budget_plan"]["requested_epochs"] == 300
    assert config_differences(requested(saved), requested(to_dict(asked))) == []
    other = to_dict(replace(asked, budget_minutes=20.0))
    assert config_differences(requested(saved), requested(other)) == ["budget_minutes: 10.0 -> 20.0"]


def test_a_run_keeps_its_plan_and_a_budget_does_not_replan_a_run_started_without_one():
    planned = plan_run(_cfg(), MEASURED, 50, STARTUP)
    kept = keep_plan(_cfg(), {"config": to_dict(planned)})
    assert (kept.epochs, kept.schedule.warmup_epochs, kept.budget_plan) == (7, planned.schedule.warmup_epochs,
                                                                             planned.budget_plan)
    with pytest.raises(ConfigError, match="started without it"):
        keep_plan(_cfg(), {"config": to_dict(TrainConfig())})
    with pytest.raises(ConfigError, match="must be > 0"):
        TrainConfig(budget_minutes=0).validate()
    with pytest.raises(ConfigError, match="planned for budget_minutes=10 .* keeps that plan"):
        replace(planned, budget_minutes=30.0).validate()


def test_a_run_that_falls_behind_its_plan_says_when_it_will_end(capsys):
    planned = plan_run(_cfg(), MEASURED, 50, STARTUP)  # 7 epochs of 70.5 s after 30 s: 525.5 s of 600

    class At:  # the run's clock, at a given number of seconds
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        def budget_elapsed(self) -> float:
            return self.seconds

    calibration.BudgetWatch(planned, DistEnv(), At(110.0)).on_epoch_end(None, 1, {})  # 10 s late: still fits
    assert capsys.readouterr().err == ""
    # Three times slower since the start: 30 + 3 x 70.5 s after epoch 1; what is left (6 epochs and the plots,
    # 425 s as planned) takes 3 x 425 s more: 1516.5 s in all.
    calibration.BudgetWatch(planned, DistEnv(), At(241.5)).on_epoch_end(None, 1, {})
    err = capsys.readouterr().err
    assert "budget 10 min: epoch 1 ended at 4.0 min, planned 1.7; at this pace the run ends at about 25.3 min" in err


def test_deit_reproduce_plans_with_the_same_planner():
    from deit.reproduce import plan

    assert plan.Cost is budget.Cost and plan.SAFETY is budget.SAFETY
    assert plan.fit_scale is budget.fit_scale and plan.fit_note is budget.fit_note


# ------------------------------------------------------------------------------------------------------ runs
# 100 s per step: an epoch (12 steps) + validation + save is 1550.5 s; 0.9 x 60 min holds 2 epochs of the 4 asked
# for, whatever the real start-up (up to 139 s of it), and no step of a third (its validation costs 350 s).
SLOW = Measurement(steps=12, step_seconds=100.0, first_step_seconds=100.0, images_per_step=8,
                   validation_seconds=350.0, save_seconds=0.5, finish_seconds=0.0, seconds=1.0)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_measure_puts_back_everything_it_touched(tmp_path, monkeypatch):
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "run", extra=(
        "ema.enabled=true", "data.num_workers=1", "data.persistent_workers=false")))
    parts = build_components(cfg, DistEnv())
    loaders = (parts.data.train_loader, parts.data.val_loader)
    before = copy.deepcopy(parts.trainer.state_dict())
    generators = [loader.generator.get_state() for loader in loaders]
    monkeypatch.setattr(calibration, "MAX_STEPS", 5)
    m = calibration.measure(cfg, DistEnv(), parts, tmp_path)
    assert m.steps == 5 and m.step_seconds > 0 and m.validation_seconds > 0 and m.save_seconds > 0
    after = parts.trainer.state_dict()
    for key in before:
        assert _equal(before[key], after[key]), key
    assert all(torch.equal(g, loader.generator.get_state()) for g, loader in zip(generators, loaders, strict=True))
    assert list(tmp_path.iterdir()) == []  # the timed save went to a scratch directory, removed


def _overrides(out: Path, teacher: Path, cache: Path, *extra: str) -> list[str]:
    # What carries state through the calibration: EMA, mixup/cutmix, stochastic depth, repeated augmentation, the
    # teacher and the teacher-output cache this run fills on the fly.
    return tiny_overrides(out, extra=("epochs=4", "ema.enabled=true", "ema.decay=0.9", "distillation.type=hard",
                                      f"teacher.checkpoint={teacher}", f"distillation.teacher_cache={cache}",
                                      "logging.tensorboard=false", *extra))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, teacher) -> Path:
    """The unbudgeted run of what the budget plans: 2 epochs, warm-up 0.5 x 2 / 4."""
    root = tmp_path_factory.mktemp("reference")
    cfg = load_config("digits-convnet-teacher", _overrides(root / "run", teacher, root / "cache", "epochs=2",
                                                           "schedule.warmup_epochs=0.25"))
    return train(cfg).run_dir


def _slow(monkeypatch, measured: Measurement = SLOW) -> list[int]:
    """Calibrations really run (5 steps: they stop inside the first epoch) and are undone, but measure ``measured``;
    returns the list of calls."""
    calls, real = [], calibration.measure
    monkeypatch.setattr(calibration, "MAX_STEPS", 5)

    def measure(*args, **kwargs) -> Measurement:
        real(*args, **kwargs)
        calls.append(1)
        return measured

    monkeypatch.setattr(calibration, "measure", measure)
    return calls


def _same_run(a: Path, b: Path) -> None:
    for name in ("last.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name

    def epochs(run: Path) -> list[dict]:
        records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records if r["kind"] == "epoch"]

    assert epochs(a) == epochs(b)


def test_the_calibration_is_undone_and_the_plan_recorded(tmp_path, teacher, reference, monkeypatch, capsys):
    calls = _slow(monkeypatch)
    # A loader worker kept between passes: the calibration's unfinished pass must not leak into the first epoch.
    result = train(load_config("digits-convnet-teacher", _overrides(
        tmp_path / "run", teacher, tmp_path / "cache", "budget_minutes=60", "data.num_workers=1")))
    out = capsys.readouterr().out
    assert calls == [1]
    assert "budget 60 min: calibration" in out and "2 of the configured 4 epochs x 12 steps fit" in out
    assert re.search(r"budget 60 min: planned 5\d\.\d min, actual \d", out)
    # Bit for bit the unbudgeted run of 2 epochs: weights, EMA, metrics, and the teacher outputs it cached.
    _same_run(result.run_dir, reference)
    parts = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".json")
    for name in parts:
        assert (tmp_path / "cache" / name).read_bytes() == (reference.parent / "cache" / name).read_bytes(), name
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["schedule"]["warmup_epochs"] == 0.25
    assert saved["budget_plan"]["requested_epochs"] == 4 and saved["budget_plan"]["step_seconds"] == 100.0
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert 3101 / 60 <= summary["budget"]["planned_minutes"] < SAFETY * 60  # 2 epochs + the real start-up
    assert 0 < summary["budget"]["actual_minutes"] < 10


def test_a_resumed_run_keeps_its_plan(tmp_path, teacher, reference, monkeypatch, capsys):
    overrides = _overrides(tmp_path / "run", teacher, tmp_path / "cache", "budget_minutes=60")
    crash_after = Checkpointer.on_epoch_end

    def crash(self, trainer, epoch, metrics):
        crash_after(self, trainer, epoch, metrics)
        raise KeyboardInterrupt  # killed right after epoch 1's save

    calls = _slow(monkeypatch)
    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "on_epoch_end", crash)
        with pytest.raises(KeyboardInterrupt):
            train(load_config("digits-convnet-teacher", overrides))
    assert calls == [1]
    # Another budget is another run: refused, naming it.
    with pytest.raises(ConfigError, match="budget_minutes: 60.0 -> 30.0"):
        train(load_config("digits-convnet-teacher", [*overrides, "budget_minutes=30"]))
    # The unchanged command line continues with the plan it started with: no new calibration, 2 epochs.
    capsys.readouterr()
    result = train(load_config("digits-convnet-teacher", overrides))
    assert calls == [1] and "timing up to" not in capsys.readouterr().out
    assert result.summary["epochs"] == 2 and 3101 / 60 <= result.summary["budget"]["planned_minutes"] < SAFETY * 60
    _same_run(result.run_dir, reference)


def test_a_partial_last_epoch_trains_its_planned_steps_and_a_kill_at_the_cut_resumes_there(tmp_path, teacher,
                                                                                              monkeypatch):
    # 1-s validations: 0.9 x 55 min holds 2 epochs (2,415 s with a save per step) and some steps of a third: 5 with
    # up to 50 s of real start-up, fewer with more.
    overrides = _overrides(tmp_path / "run", teacher, tmp_path / "cache", "budget_minutes=55", "save_every=1")
    calls = _slow(monkeypatch, replace(SLOW, validation_seconds=1.0))
    on_step = Checkpointer.on_step

    def crash(self, trainer, lr):
        on_step(self, trainer, lr)
        if trainer.progress.step == trainer.schedule.total_steps:
            raise KeyboardInterrupt  # killed at the cut: its step saved, the epoch's end not reached

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "on_step", crash)
        with pytest.raises(KeyboardInterrupt):
            train(load_config("digits-convnet-teacher", overrides))
    result = train(load_config("digits-convnet-teacher", overrides))
    plan = yaml.safe_load((result.run_dir / "config.yaml").read_text())["budget_plan"]
    assert calls == [1] and 24 < plan["steps"] < 36
    assert (result.summary["epochs"], result.summary["steps"]) == (3, plan["steps"])  # no step past the cut
    records = [json.loads(s) for s in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    ends = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in ends] == [1, 2, 3] and ends[-1]["step"] == plan["steps"]
    assert result.summary["final"]["top1"] == ends[-1]["top1"]  # the cut epoch validated: the run's final metrics


def test_deit_train_budget_minutes_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [*DEIT, "train", "--config", "digits-convnet-teacher", *tiny_overrides(out, extra=("epochs=3",)),
           "--budget-minutes", "3"]
    proc = subprocess.run(cmd, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "budget 3 min: calibration" in proc.stdout and "steps/s" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    epochs = saved["epochs"]
    assert 1 <= epochs <= 3 and summary["epochs"] == epochs and saved["budget_plan"]["requested_epochs"] == 3
    records = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(1, epochs + 1))
    b = summary["budget"]
    assert b["budget_minutes"] == 3 and b["planned_minutes"] > 0 and b["actual_minutes"] > 0
    assert f"budget 3 min: planned {b['planned_minutes']:.2f} min, actual {b['actual_minutes']:.2f} min" in proc.stdout
    # The same command again: the finished run, its plan kept (no new calibration).
    again = subprocess.run(cmd, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "is complete" in again.stdout and "timing up to" not in again.stdout


def test_a_budget_too_small_for_one_epoch_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "runs" / "run"
    cmd = [*DEIT, "train", "--config", "digits-convnet-teacher", *tiny_overrides(out), "--budget-minutes", "0.01"]
    proc = subprocess.run(cmd, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "budget_minutes=0.01 does not fit one epoch" in proc.stderr and "min here; give budget_minutes=" in \
        proc.stderr
    assert not (tmp_path / "runs").exists()


RANKS_SCRIPT = """
import os, sys
from deit.train import calibration
from deit.train.budget import Measurement

real = calibration.measure

def measure(*args, **kwargs):
    real(*args, **kwargs)
    # 6 steps an epoch on each rank: rank 0's plan is 2 epochs; rank 1 alone would find the budget too small.
    step = 200.0 if os.environ["RANK"] == "0" else 1e6
    return Measurement(12, step, step, 8, 350.0, 0.5, 0.0, 1.0)

calibration.measure = measure
from deit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_ranks_train_rank_0s_plan(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "train", "--config", "digits-convnet-teacher", *tiny_overrides(out, extra=("epochs=4",)),
           "--budget-minutes", "60"]
    proc = subprocess.run(cmd, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2 and summary["ranks_identical"] is True
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 2
