"""Training: configs and presets, the distillation loss, optimizer and schedule, EMA, the engine and the runner.

Heavy pieces are imported on first use, so ``import deit.train`` stays light for the CLI.
"""

from deit.train.config import ConfigError, TrainConfig
from deit.train.loss import DistillationLoss, DistillationObjective
from deit.train.objectives import ObjectiveSpec, objective_names, register_objective
from deit.train.presets import list_presets, load_config

__all__ = [
    "ConfigError",
    "DistillationLoss",
    "DistillationObjective",
    "ObjectiveSpec",
    "TrainConfig",
    "TrainTask",
    "list_presets",
    "load_config",
    "objective_names",
    "register_objective",
    "train",
]


def __getattr__(name: str):
    if name == "train":
        from deit.train.runner import train

        return train
    if name == "TrainTask":
        from deit.train.task import TrainTask

        return TrainTask
    raise AttributeError(f"module 'deit.train' has no attribute {name!r}")
