"""A study's worker processes stop when the study process is killed, instead of training on as orphans."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STUDY = """
import multiprocessing, os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
from deit.reproduce.execute import stop_with_parent

if __name__ == "__main__":
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=stop_with_parent,
                               initargs=(os.getpid(), 0.1, 2.0))
    pool.submit(time.sleep, 120)  # a run that would hold its CPU for two minutes
    # One that ignores SIGTERM (as a run does while it finishes its evaluation): stopped after the grace period.
    pool.submit(signal.signal, signal.SIGTERM, signal.SIG_IGN).result()
    pool.submit(time.sleep, 120)
    time.sleep(1.0)
    with open(sys.argv[1], "w") as f:
        f.write(" ".join(str(pid) for pid in pool._processes))
    time.sleep(120)
"""


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited (it waits for a parent that does not reap it)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_stop_when_the_study_process_is_killed(tmp_path):
    script, pids = tmp_path / "study.py", tmp_path / "pids"
    script.write_text(STUDY)
    study = subprocess.Popen([sys.executable, str(script), str(pids)])
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [int(p) for p in pids.read_text().split()]
        assert workers and all(running(p) for p in workers)
        os.kill(study.pid, signal.SIGKILL)
        study.wait()
        deadline = time.monotonic() + 20
        while any(running(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(running(p) for p in workers), "a worker outlived the study process"
    finally:
        study.kill()
        for pid in (int(p) for p in pids.read_text().split()) if pids.exists() and pids.read_text() else ():
            if running(pid):
                os.kill(pid, signal.SIGKILL)
