"""Faults at scale, on CPU with gloo: a torchrun worker killed mid-epoch (the group restarts by itself) and a
SIGTERM to the whole group (the same command continues) both end with the uninterrupted run's weights, bit for
bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import REPO, SUBPROCESS_ENV, tiny_overrides

from deit.cli import main
from deit.runtime.locks import FileLock, LockHeld
from deit.train.checkpointing import LOCK_FILE
from deit.train.preemption import EXIT_PREEMPTED

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _command(out: Path, *torchrun_args: str) -> list[str]:
    overrides = tiny_overrides(out, extra=("epochs=4", "save_every=2", "ema.enabled=true", "ema.decay=0.9"))
    return [*TORCHRUN, *torchrun_args, "-m", "deit", "train", "--config", "digits-convnet-teacher", *overrides]


def _start(cmd: list[str]) -> subprocess.Popen:
    # A session of its own: the test can signal the whole group, as a scheduler does.
    return subprocess.Popen(cmd, cwd=REPO, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _steps_logged(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(s).get("step", 0) for s in lines if s.endswith("}")), default=0)


def _wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int) -> None:
    deadline = time.monotonic() + 180
    while _steps_logged(run_dir) < step:
        assert proc.poll() is None, f"the run ended before step {step}:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, f"the run never reached step {step}"
        time.sleep(0.01)


def _worker(agent_pid: int, rank: int) -> int:
    """The pid of the torchrun worker with ``rank`` (a child of the agent, RANK in its environment)."""
    for task in Path(f"/proc/{agent_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(child)
    raise AssertionError(f"no worker with RANK={rank} under torchrun (pid {agent_pid})")


def _assert_same_weights(a: Path, b: Path) -> None:
    for name in ("last.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs from the uninterrupted run"
    assert json.loads((b / "summary.json").read_text())["steps"] == 24


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elastic") / "uninterrupted"
    proc = subprocess.run(_command(out), cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
def test_killed_worker_restarts_the_group_and_the_run_finishes_identical(tmp_path, reference):
    out = tmp_path / "killed"
    proc = _start(_command(out, "--max-restarts", "1"))
    _wait_for_step(proc, out, 5)  # states were saved at steps 2 and 4: the kill lands between two saves
    os.kill(_worker(proc.pid, 0), signal.SIGKILL)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log  # the job finished by itself
    events = [r["event"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "event"]
    assert events == ["start", "resume"]
    _assert_same_weights(reference, out)


@pytest.mark.slow
def test_sigterm_to_the_group_saves_and_the_same_command_continues(tmp_path, reference):
    out = tmp_path / "preempted"
    proc = _start(_command(out))
    _wait_for_step(proc, out, 5)
    # One lock for the group, held by rank 0 (rank 1 runs beside it: it never tried to take it).
    with pytest.raises(LockHeld) as held:
        FileLock(out / LOCK_FILE).acquire()
    assert held.value.holder.pid == _worker(proc.pid, 0)
    os.killpg(proc.pid, signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    # torchrun itself stops on the signal (exit 1); every worker saved nothing but rank 0's state, and said so.
    assert proc.returncode != 0 and log.count("stopped by SIGTERM") == 2, log
    assert not (out / "summary.json").exists() and not (out / LOCK_FILE).exists()  # released on the way out
    stopped_at = torch.load(out / "state.pt", weights_only=False)["progress"]["step"]
    assert 5 <= stopped_at < 24  # saved at the step boundary after the signal, not at an older save

    again = subprocess.run(_command(out), cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming at epoch" in again.stdout and f"step {stopped_at}" in again.stdout
    _assert_same_weights(reference, out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_in_one_process_saves_and_exits_with_its_own_code(tmp_path, sig):
    """Without torchrun: the process's own exit code tells a scheduler the run is saved and can be requeued."""
    out = tmp_path / "single"
    cmd = [sys.executable, "-m", "deit", "train", "--config", "digits-convnet-teacher",
           *tiny_overrides(out, extra=("epochs=30",))]
    proc = _start(cmd)
    _wait_for_step(proc, out, 3)
    proc.send_signal(sig)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, log
    events = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines() if '"event"' in s]
    assert events[-1]["event"] == "preempted" and events[-1]["signal"] == sig.name
    assert torch.load(out / "state.pt", weights_only=False)["progress"]["step"] == events[-1]["step"]
    assert main(["train", "--config", "digits-convnet-teacher", *tiny_overrides(out, extra=("epochs=30",))]) == 0
