"""The run directory and its files, all written atomically (write to a temporary file, fsync, rename).

    RUN_DIR/
      config.yaml           the resolved config (what ``deit train --resume RUN_DIR`` reads back)
      metrics.jsonl         one JSON object a line: ``{"kind": "step"|"epoch"|"event", "step": ..., ...}``
      last.safetensors      the latest weights, our checkpoint layout (deit.load_checkpoint reads it)
      best.safetensors      the weights of the epoch with the best validation top-1
      ema.safetensors       the EMA weights at the latest save (when EMA is on)
      state.pt              training state: model, optimizer, schedule position, EMA, grad scaler, epoch, step,
                            position in the epoch, RNG states, best metric; self-contained, so resuming needs
                            nothing else and a kill between two files can never mix two steps
      summary.json          final metrics of the run
      plots/*.png           ``deit plot RUN_DIR``
      run.lock              while a run works here: who it is (pid, host, start, command); its flock keeps a
                            second run out and dies with its holder

A SIGKILL at any moment leaves every file either at its previous or its new version; ``metrics.jsonl`` is
append-only, and on resume the lines written after the resumed step (and a torn last line) are dropped.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from deit.runtime.files import atomic_torch_save, atomic_write_text
from deit.runtime.locks import FileLock, Holder, LockHeld

STATE_VERSION = 1
LOCK_FILE = "run.lock"


# --------------------------------------------------------------------------------------------------- RNG states
def rng_states() -> dict:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ------------------------------------------------------------------------------------------------------ run dir
class RunDir:
    """Paths and I/O of one run directory (only rank 0 writes)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = FileLock(self.root / LOCK_FILE)
        self._created: Path | None = None  # the topmost directory claim() made (None: the run dir existed)

    config = property(lambda self: self.root / "config.yaml")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    state = property(lambda self: self.root / "state.pt")
    last = property(lambda self: self.root / "last.safetensors")
    best = property(lambda self: self.root / "best.safetensors")
    ema = property(lambda self: self.root / "ema.safetensors")
    summary = property(lambda self: self.root / "summary.json")
    plots = property(lambda self: self.root / "plots")
    lock_file = property(lambda self: self.root / LOCK_FILE)

    def claim(self) -> Holder | None:
        """Create the directory (noting which directories this made) and lock it for this process; returns the
        record of a dead run whose lock this took over. Raises LockHeld while a live process holds it."""
        self._created = _make_dirs(self.root)
        self._lock = FileLock(self.lock_file)
        try:
            return self._lock.acquire()
        except LockHeld:
            self._created = None  # in use by the holder: never removed from here
            raise
        except BaseException:
            self.release(failed=True)
            raise

    def release(self, failed: bool = False, moved_to: str | Path | None = None) -> None:
        """Unlock (the lock file is at ``moved_to`` when the directory was renamed meanwhile). ``failed``: the run
        stops before it saved anything, so the directories ``claim`` made are removed; a directory that existed
        before, or holds a saved state, is kept."""
        if failed and self._created is not None and not self.has_state():
            shutil.rmtree(self.root, ignore_errors=True)
            for parent in self.root.parents:  # the parents claim made, while empty
                if not parent.is_relative_to(self._created) or _not_empty(parent):
                    break
                parent.rmdir()
        self._lock.release(moved_to)
        self._created = None

    def has_state(self) -> bool:
        return self.state.is_file()

    def save_state(self, state: dict) -> None:
        atomic_torch_save({"version": STATE_VERSION, **state}, self.state)

    def load_state(self) -> dict:
        if not self.state.is_file():
            raise FileNotFoundError(f"{self.root} has no training state ({self.state.name}); nothing to resume")
        try:
            # Our own file, written by this run: it holds numpy RNG states, so not weights_only.
            state = torch.load(self.state, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 (a torn or foreign file: torch raises RuntimeError, EOFError ...)
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ValueError(
                f"{self.state} cannot be read ({type(exc).__name__}: {line}): continue from the run's weights "
                f"instead (model.finetune={self.last}), or start over with --fresh (the old run is moved aside)"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"{self.state} is not a training state (a {type(state).__name__}); start over with "
                             "--fresh (the old run is moved aside)")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.state} has state version {state.get('version')}, expected {STATE_VERSION}")
        return state

    def log(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.metrics)

    def truncate_metrics(self, step: int) -> None:
        """Keep only the lines of steps up to ``step`` (what a resume from ``step`` will not write again)."""
        if not self.metrics.exists():
            return
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")


def _make_dirs(root: Path) -> Path | None:
    """``mkdir -p root``; the topmost directory this call made (None: ``root`` existed)."""
    made = None
    for path in (*reversed(root.parents), root):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        made = made or path
    return made


def _not_empty(path: Path) -> bool:
    return not path.is_dir() or any(path.iterdir())


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file; a torn last line (a kill mid-write) is skipped."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


__all__ = [
    "LOCK_FILE",
    "RunDir",
    "read_metrics",
    "rng_states",
    "set_rng_states",
]
