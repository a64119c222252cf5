"""Training: configs and presets, the distillation loss, optimizer and schedule, EMA, the engine and the runner.

Heavy pieces are imported on first use, so ``import deit.train`` stays light for the CLI.
"""

from deit.train.config import ConfigError, TrainConfig, list_presets, load_config
from deit.train.loss import DistillationLoss

__all__ = ["ConfigError", "DistillationLoss", "TrainConfig", "list_presets", "load_config", "train"]


def __getattr__(name: str):
    if name == "train":
        from deit.train.runner import train

        return train
    raise AttributeError(f"module 'deit.train' has no attribute {name!r}")
