"""Training: configs and presets, the distillation loss, optimizer and schedule, EMA, the engine and the runner.

Heavy pieces are imported on first use, so ``import deit.train`` stays light for the CLI.
"""

from deit.train.config import ConfigError, TrainConfig
from deit.train.loss import DistillationLoss
from deit.train.presets import list_presets, load_config

__all__ = ["ConfigError", "DistillationLoss", "TrainConfig", "list_presets", "load_config", "train"]


def __getattr__(name: str):
    if name == "train":
        from deit.train.runner import train

        return train
    raise AttributeError(f"module 'deit.train' has no attribute {name!r}")
