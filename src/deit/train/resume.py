"""What ``deit train`` does with an output directory that already holds a run: the resume policy.

``resume: auto`` (the default): a run made with the same config is continued from its last saved state, so the
unchanged command line after a crash, a ``torchrun --max-restarts`` restart, a SLURM ``--requeue`` or a
Kubernetes restart picks up where the run stopped; a run made with another config is refused, naming the keys that
differ. ``resume: never`` (``deit train --fresh``) starts over, moving the old run aside (never deleting it).
``--resume RUN_DIR`` requires a run to continue.

Rank 0 locks the directory first (``RunDir.claim``: one run at a time, the lock dies with its holder, a dead
run's lock is taken over), then decides (and moves); every rank gets the same decision, so no rank goes on alone or
stops alone. A start refused here leaves no directory it made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from deit.runtime.distributed import DistEnv, barrier, on_main
from deit.runtime.locks import LockHeld
from deit.runtime.typedconfig import deep_merge, dict_differences, keys_where, read_yaml_file, to_dict
from deit.train.budget import requested
from deit.train.checkpointing import LOCK_FILE, RunDir
from deit.train.config import ConfigError, TrainConfig

# Keys that may change between a run and its continuation (they change nothing computed): the config fields that
# declare resumable=True (deit.runtime.typedconfig.setting).
RESUMABLE_CHANGES = keys_where(TrainConfig, "resumable", True)


@dataclass(frozen=True)
class RunDecision:
    resume: bool  # continue the saved state (when there is one)
    move_aside: bool = False  # --fresh on a directory that holds a run: move that run aside first
    moved_to: str | None = None  # where --fresh put the previous run
    error: str | None = None  # the run must not start: why, and the fix
    took_over: str | None = None  # the dead run whose lock this one took over


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every setting that differs, ignoring the ones a continuation may change."""
    return dict_differences(saved, current, RESUMABLE_CHANGES)


def other_data(root: Path, saved: dict, cfg: TrainConfig) -> str | None:
    """Why the run in ``root``, saved with config ``saved``, cannot continue on the data set objects ``cfg`` was
    given (``data.fingerprint``); None when it can, or when ``cfg`` names its data set (its config says which)."""
    mine = cfg.data.fingerprint
    data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    theirs = data.get("fingerprint")
    if mine is None or mine == theirs:
        return None
    what = f"data set objects with fingerprint {theirs}" if theirs else f"data.dataset={data.get('dataset')}"
    return (f"{root} holds a run trained on {what}, not on the data sets given now (fingerprint {mine}): continue "
            "it with the same train and val sets, start over with resume='never' (the old run is moved aside, not "
            "deleted), or choose another output_dir")


def check_same_data(run: RunDir, state: dict | None, cfg: TrainConfig) -> None:
    """A saved state continues only on the data set objects it was trained on (whatever the resume mode)."""
    problem = other_data(run.root, state.get("config", {}), cfg) if state is not None else None
    if problem:
        raise ConfigError(problem)


def move_aside(root: Path) -> Path:
    """Rename ``root`` to a sibling ``<name>.prev-<date>-<time>`` (with a counter if that exists too)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = root.with_name(f"{root.name}.prev-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = root.with_name(f"{root.name}.prev-{stamp}-{n}")
    root.rename(target)
    return target


def _decide(run: RunDir, cfg: TrainConfig, mode: str) -> RunDecision:
    """Rank 0's decision for ``run``: ``mode`` is the config's ``resume`` (auto | never), "require" (a saved state
    must be there) or "continue" (continue a saved state if there is one: the caller vouches for the config)."""
    held = run.config.is_file() or run.has_state()
    if mode == "continue":
        return RunDecision(True)
    if mode == "require":
        if not run.has_state():
            return RunDecision(False, error=f"{run.root} has no saved training state yet; nothing to resume "
                                            f"(start it with `deit train --config ...  output_dir={run.root}`)")
        return RunDecision(True)
    if not held:
        return RunDecision(False)
    if mode == "never":
        return RunDecision(False, move_aside=True)
    saved = read_yaml_file(run.config, f"the run's config {run.config}") if run.config.is_file() else None
    if saved is not None and not isinstance(saved, dict):
        return RunDecision(False, error=f"{run.config} holds no config (a YAML mapping): start over with --fresh "
                                        "(the old run is moved aside), or choose another output_dir")
    if saved is None:  # killed between its first checkpoint and its config: the state has the config too
        saved = run.load_state().get("config", {})
    if other_data(run.root, saved, cfg):
        return RunDecision(False, error=other_data(run.root, saved, cfg))
    # A setting the saved config lacks (written before the setting existed) counts as its default. A run planned by
    # budget_minutes is compared as it was asked for (its requested epochs), so its unchanged command line goes on.
    diffs = config_differences(requested(deep_merge(to_dict(TrainConfig()), saved)), requested(to_dict(cfg)))
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        return RunDecision(False, error=(
            f"{run.root} already holds a run made with another config ({shown}): continue it with its own config "
            f"(`deit train --resume {run.root}`), start over with --fresh (the old run is moved aside, not "
            "deleted), or choose another output_dir"))
    return RunDecision(True)


def in_use(run: RunDir, exc: LockHeld) -> str:
    """The refusal of a run directory another live run holds: who, since when, and the fix."""
    holder = exc.holder
    who = f"{holder.describe()}" if holder else "a process that is starting"
    stop = f" (kill {holder.pid} on {holder.host})" if holder else ""
    return (f"{run.root} is in use by another run: {who}; wait for it to finish, choose another output_dir, or stop "
            f"it{stop}")


def _claim(run: RunDir, cfg: TrainConfig, mode: str) -> RunDecision:
    """Rank 0: lock the run directory, then decide, moving a previous run aside for --fresh (never one that is
    running: the lock comes first). A refusal unlocks and removes what this made."""
    try:
        previous = run.claim()
    except LockHeld as exc:
        raise ConfigError(in_use(run, exc)) from None
    try:
        decision = _decide(run, cfg, mode)
        if decision.error:
            raise ConfigError(decision.error)
        if decision.move_aside:
            moved = move_aside(run.root)  # the lock file goes with it, still locked, until released there
            run.release(moved_to=moved / LOCK_FILE)
            try:
                run.claim()
            except LockHeld as exc:  # another run made the directory anew in the meantime
                raise ConfigError(in_use(run, exc)) from None
            decision = replace(decision, moved_to=str(moved))
    except BaseException:
        run.release(failed=True)
        raise
    return replace(decision, took_over=previous.describe() if previous else None)


def open_run(root: Path, cfg: TrainConfig, env: DistEnv, mode: str) -> tuple[RunDir, dict | None]:
    """The run directory (created and, on rank 0, locked: ``run.release`` unlocks it) and the saved training state
    to continue from (None: start at step 0), decided on rank 0 and shared with every rank; a refusal raises
    ConfigError on every rank."""
    run = RunDir(root)
    decision = on_main(env, lambda: _claim(run, cfg, mode))
    if env.is_main:
        if decision.took_over:
            print(f"{run.root}: took over the lock left by {decision.took_over}, which is no longer running",
                  flush=True)
        if decision.moved_to:
            print(f"--fresh: the previous run in {run.root} was moved to {decision.moved_to}", flush=True)
    try:
        barrier(env)
        state = run.load_state() if decision.resume and run.has_state() else None
    except BaseException:
        run.release(failed=True)
        raise
    return run, state


__all__ = ["RESUMABLE_CHANGES", "RunDecision", "check_same_data", "config_differences", "in_use", "move_aside",
           "open_run", "other_data"]
