"""Signals that ask a process to stop soon (what SLURM, Kubernetes and torchrun send before they kill a job):
SIGTERM and SIGUSR1. :class:`StopFlag` turns them into a flag the training loop polls at step boundaries."""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)


class StopFlag:
    """A context that turns the stop signals into a flag (and restores the previous handlers on exit).

    Outside the main thread (signal handlers cannot be installed there) it never trips."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals, self.received = signals, None
        self._previous: dict[signal.Signals, object] = {}

    def __call__(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the stop signals are the main process's to handle (a worker killed by the
    group's SIGTERM would fail the step the main process is finishing before it saves)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


__all__ = ["STOP_SIGNALS", "StopFlag", "ignore_stop_signals"]
