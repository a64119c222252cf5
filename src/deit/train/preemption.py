"""Preemption: SIGTERM and SIGUSR1 (what SLURM, Kubernetes and torchrun send before they kill a job) stop training
at the next optimizer-step boundary, after the full training state is saved.

The signal only sets a flag (``deit.runtime.signals.StopFlag``). The trainer sums the flag over ranks with the loss
it already all-reduces every micro-batch, so every rank stops at the same step (and rank 0 writes the state every
rank would have written). The process then exits with :data:`EXIT_PREEMPTED`, and the same command continues the
run (``resume: auto``).
"""

from __future__ import annotations

# EX_TEMPFAIL of sysexits.h: "try again later" — the run is saved and the same command continues it.
EXIT_PREEMPTED = 75


class StopTraining(Exception):
    """Raised by the trainer at the step boundary where a stop was agreed; the runner saves, then re-raises
    :class:`Preempted`."""


class Preempted(Exception):
    """Training stopped on a signal with its state saved; the same command continues it."""

    def __init__(self, signal_name: str, step: int, state_path: str) -> None:
        self.signal_name, self.step = signal_name, step
        super().__init__(f"stopped by {signal_name} at optimizer step {step}; the training state is saved in "
                         f"{state_path}: run the same command again to continue")


__all__ = ["EXIT_PREEMPTED", "Preempted", "StopTraining"]
