"""TensorBoard event files beside ``metrics.jsonl``, from the same records (``logging.tensorboard``).

``auto`` writes them when the optional ``tensorboard`` package is installed (``pip install deit[tensorboard]``);
``true`` makes its absence an error naming that command. ``tensorboard --logdir runs/`` then shows every run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from deit.train.config import ConfigError

# Record keys that are not curves.
_NOT_SCALARS = {"kind", "epoch", "step", "event", "num_samples", "ema_num_samples"}


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def wants_tensorboard(setting: bool | str) -> bool:
    """Whether to write event files for ``logging.tensorboard`` (true | false | auto)."""
    if setting == "auto":
        return tensorboard_available()
    if setting and not tensorboard_available():
        raise ConfigError("logging.tensorboard=true needs the tensorboard package: pip install 'deit[tensorboard]' "
                          "(or set logging.tensorboard=auto or false)")
    return bool(setting)


class TensorBoardSink:
    """Writes the numeric fields of metrics records as scalars: ``train/<key>`` for step records,
    ``epoch/<key>`` for epoch records, at the record's optimizer step."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops what the interrupted process wrote after its last saved step.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: dict) -> None:
        group = {"step": "train", "epoch": "epoch"}.get(record.get("kind"))
        if group is None:
            return
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{group}/{key}", value, record["step"])
        if group == "epoch":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


__all__ = ["TensorBoardSink", "tensorboard_available", "wants_tensorboard"]
