"""`deit reproduce`: the paper's distillation study (its Table 5) on real data, within a time budget.

Per seed, on one fixed small training split: a convnet teacher; DeiT without distillation; DeiT with "usual"
distillation into the class token (soft and hard); DeiT with the distillation token (hard and soft), each head
reported. Mean ± std over seeds, with every paper claim checked against seed noise. See
``docs/results/reproduce-digits.md`` for the regime search behind the defaults and what it showed.

    from deit.reproduce import StudyConfig, run_study
    result = run_study(StudyConfig(output="runs/reproduce", seeds=(0, 1, 2), budget_minutes=30))
"""

from deit.reproduce.methods import METHODS, ROWS, Method
from deit.reproduce.plan import Cost, Plan, plan_epochs
from deit.reproduce.regime import DEFAULT_REGIME, Regime
from deit.reproduce.study import StudyConfig, StudyResult, load_rows, run_study
from deit.reproduce.table import aggregate, mean_std

__all__ = [
    "DEFAULT_REGIME",
    "METHODS",
    "ROWS",
    "Cost",
    "Method",
    "Plan",
    "Regime",
    "StudyConfig",
    "StudyResult",
    "aggregate",
    "load_rows",
    "mean_std",
    "plan_epochs",
    "run_study",
]
