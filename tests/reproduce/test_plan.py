"""The budget plan: epochs scaled (never methods dropped) so the predicted time fits."""

from __future__ import annotations

import pytest

from deit.reproduce import METHODS, Cost, Regime, plan_epochs
from deit.reproduce.plan import SAFETY, makespan, run_cost, study_seconds

# teacher 1 s/epoch, every student kind 2 s/epoch, 5 s fixed per run.
COSTS = {k: Cost(per_epoch=1.0 if k == "teacher" else 2.0, per_run=5.0)
         for k in ("teacher", "deit", "deit-cls", "deit-dist")}
REGIME = Regime(teacher_epochs=50, student_epochs=100)
# One seed at the full schedule: 6 runs x 5 s + 50 x 1 + 5 students x 100 x 2 = 30 + 50 + 1000 = 1080 s.
FULL = 1080.0


def test_cost_model_by_hand():
    assert study_seconds(COSTS, METHODS, 1, 50, 100, workers=1) == pytest.approx(FULL)


def test_full_schedule_when_it_fits():
    plan = plan_epochs(COSTS, REGIME, num_seeds=3, budget_seconds=3 * FULL / SAFETY + 100, calibration_seconds=50)
    assert (plan.teacher_epochs, plan.student_epochs, plan.scale) == (50, 100, 1.0)
    assert plan.predicted_seconds == pytest.approx(50 + 3 * FULL)


def test_scaled_to_fit():
    budget = 1800.0
    plan = plan_epochs(COSTS, REGIME, num_seeds=3, budget_seconds=budget, calibration_seconds=30)
    # available for epochs: 0.9 * 1800 - 30 - 3 * 30 = 1500; at scale 1 they cost 3 * 1050 = 3150 -> 0.476;
    # 23 / 47 epochs cost 3 * (23 + 470) = 1479 s, 24 / 48 would cost 1512 s.
    assert 1500 / 3150 <= plan.scale < 0.48
    assert (plan.teacher_epochs, plan.student_epochs) == (23, 47)
    assert plan.predicted_seconds == pytest.approx(30 + 3 * 30 + 1479)
    assert plan.predicted_seconds <= SAFETY * budget


def test_makespan_by_hand():
    # Two chains (teacher 10 s, students 4 s + 6 s) on two workers: both teachers run together (0-10), then the
    # students in queue order: 4 s on A (10-14), 6 s on B (10-16), 4 s on A (14-18), 6 s on B (16-22) -> 22 s.
    chains = [(10.0, [4.0, 6.0]), (10.0, [4.0, 6.0])]
    assert makespan(chains, 1) == 40.0
    assert makespan(chains, 2) == 22.0
    # A worker never starts a student before its teacher ends: one chain cannot use a second worker at first.
    assert makespan([(10.0, [5.0, 5.0])], 2) == 15.0
    assert makespan([(10.0, [5.0, 5.0])], 4) == 15.0


def test_more_workers_buy_more_epochs():
    one = plan_epochs(COSTS, REGIME, num_seeds=3, budget_seconds=1800, calibration_seconds=30, workers=1)
    two = plan_epochs(COSTS, REGIME, num_seeds=3, budget_seconds=1800, calibration_seconds=30, workers=2)
    assert two.student_epochs > 1.8 * one.student_epochs
    assert two.predicted_seconds <= SAFETY * 1800 and two.workers == 2
    assert two.predicted_seconds == pytest.approx(
        30 + study_seconds(COSTS, METHODS, 3, two.teacher_epochs, two.student_epochs, workers=2))


def test_tiny_budget_still_runs_every_method_one_epoch():
    plan = plan_epochs(COSTS, REGIME, num_seeds=3, budget_seconds=10)
    assert (plan.teacher_epochs, plan.student_epochs) == (1, 1)
    assert "over budget" in plan.note


def test_run_cost_keeps_the_last_epochs_validation_out_of_the_epoch_cost():
    # Epochs of 15 s after a 20-s first one; the last epoch's mark also holds a 40-s validation (CIFAR's test set).
    cost = run_cost([20.0, 35.0, 90.0], seconds=100.0)
    assert cost == Cost(per_epoch=15.0, per_run=55.0)
    # A run of 3 epochs of 15 s takes 55 + 3 * 15 = 100 s: the model gives back the wall time it was measured on.
    assert cost.per_run + 3 * cost.per_epoch == 100.0
    # The teacher-output cache build validates nothing: all its epochs after the first are timed.
    assert run_cost([10.0, 13.0, 16.0], seconds=17.0, validates_last=False) == Cost(per_epoch=3.0, per_run=8.0)
    assert run_cost([12.0], seconds=15.0) == Cost(per_epoch=12.0, per_run=3.0)
