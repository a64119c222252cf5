"""One run at a time in a run directory: a second `deit train` on it is refused naming the first, a dead run's lock
is taken over, and a start that fails leaves no directory it made."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.cli import main
from deit.runtime.locks import FileLock, LockHeld
from deit.train.checkpointing import LOCK_FILE
from deit.train.preemption import EXIT_PREEMPTED

TRAIN = [*DEIT, "train", "--config", "digits-convnet-teacher"]


def _records(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(s) for s in lines if s.endswith("}")]


def _wait(proc: subprocess.Popen, done, what: str) -> None:
    deadline = time.monotonic() + 180
    while not done():
        assert proc.poll() is None, f"the run ended before {what}:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.01)


def test_a_second_run_on_the_same_dir_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    command = [*TRAIN, *tiny_overrides(out, extra=("epochs=200",))]
    first = subprocess.Popen(command, cwd=REPO, env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait(first, lambda: any(r["kind"] == "step" for r in _records(out)), "logged a step")
        started = time.monotonic()
        second = subprocess.run(command, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
        seconds = time.monotonic() - started
        assert first.poll() is None, "the first run must still be working"
    finally:
        os.killpg(first.pid, signal.SIGTERM)  # saves and stops: what the first run wrote stays consistent
        log, _ = first.communicate(timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    err = second.stderr
    assert f"{out} is in use by another run: pid {first.pid} on host " in err, err
    assert "deit train --config digits-convnet-teacher" in err  # the holder's command line
    assert "wait for it to finish, choose another output_dir, or stop it" in err
    assert "step " not in second.stdout and seconds < 60  # refused before it built anything, let alone trained
    assert first.returncode == EXIT_PREEMPTED, log

    records = _records(out)
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1))  # each step once: nobody else wrote into the file
    epochs = [r["epoch"] for r in records if r["kind"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1))
    assert [r["event"] for r in records if r["kind"] == "event"] == ["start", "preempted"]
    assert not (out / LOCK_FILE).exists()  # released on the way out


def _holder(lock: Path) -> subprocess.Popen:
    """Another process holding ``lock`` (as a run that is alive does)."""
    code = ("import sys, time; from deit.runtime.locks import FileLock; FileLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], cwd=REPO, env=SUBPROCESS_ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_holder_keeps_fresh_out_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: an earlier run\n")  # what --fresh would move aside
    before = sorted(p.name for p in out.iterdir())
    holder = _holder(out / LOCK_FILE)
    try:
        capsys.readouterr()
        assert main(["train", "--fresh", "--config", "digits-convnet-teacher",
                     *tiny_overrides(out, extra=("epochs=1",))]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another run: pid {holder.pid}" in err and err.count("\n") == 1
        assert not list(tmp_path.glob("run.prev-*"))
        assert sorted(p.name for p in out.iterdir()) == sorted([*before, LOCK_FILE])  # nothing moved or written
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, its flock dies with the process
        holder.wait()
    assert (out / LOCK_FILE).exists()

    assert main(["train", "--fresh", "--config", "digits-convnet-teacher",
                 *tiny_overrides(out, extra=("epochs=1",))]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "took over" in line]
    assert len(said) == 1 and said[0].startswith(f"{out}: took over the lock left by pid {holder.pid} on host "
                                                 f"{socket.gethostname()} since ")
    assert said[0].endswith("which is no longer running")
    assert len(list(tmp_path.glob("run.prev-*"))) == 1  # --fresh moved the earlier run aside, as it should
    assert not (out / LOCK_FILE).exists()


def test_a_start_that_fails_leaves_no_directory_it_made(tmp_path, capsys):
    # The data fails after the run directory was claimed: batch 200 > 96 training images.
    new = tmp_path / "new" / "runs" / "x"
    assert main(["train", "--config", "digits-convnet-teacher",
                 *tiny_overrides(new, extra=("data.batch_size=200",))]) == 2
    assert "no batches" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither the run dir nor the parents it made

    existed = tmp_path / "existed"
    existed.mkdir()
    assert main(["train", "--config", "digits-convnet-teacher",
                 *tiny_overrides(existed, extra=("data.batch_size=200",))]) == 2
    assert existed.is_dir() and not any(existed.iterdir())  # kept, and nothing left in it

    # A finished run that fails to resume (a bad override) is left exactly as it was.
    run = tmp_path / "done"
    assert main(["train", "--config", "digits-convnet-teacher", *tiny_overrides(run, extra=("epochs=1",))]) == 0
    files = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(["train", "--resume", str(run), "data.batch_size=200"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == files


def test_the_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "x.lock"
    a, b = FileLock(path), FileLock(path)
    assert a.acquire() is None
    with pytest.raises(LockHeld) as held:
        b.acquire()
    assert held.value.holder is not None and held.value.holder.pid == os.getpid()
    a.release()
    assert not path.exists()
    assert b.acquire() is None  # a clean release leaves no record to take over
    b.release()
