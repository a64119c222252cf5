"""Freed CPU memory stays in the process (deit.runtime.allocator): a freed 64 MiB tensor is kept for the next one
instead of being unmapped, the `deit` command applies it to its own process, and DEIT_KEEP_FREED_MEMORY=0 opts out.

glibc's own accounting (mallinfo2) is the witness, each case in a fresh process: the setting is process-wide."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_support import DEIT, REPO, SUBPROCESS_ENV  # noqa: E402

from deit.runtime.allocator import ENV  # noqa: E402

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting is glibc's")

PROBE = r"""
import ctypes, json
import torch
from deit.runtime.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
state = keep_freed_memory()
before = libc.mallinfo2()
t = torch.ones(16 * 2**20)  # 64 MiB
during = libc.mallinfo2()
del t
after = libc.mallinfo2()
print(json.dumps({"state": state, "mapped": during.hblkhd - before.hblkhd, "free_kept": after.fordblks}))
"""
MIB64 = 64 * 2**20


def _probe(keep: str) -> dict:
    env = {**SUBPROCESS_ENV, ENV: keep, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_freed_tensor_stays_in_the_process_for_the_next_one() -> None:
    kept = _probe("1")
    assert kept["state"].startswith("glibc keeps freed memory")
    assert kept["mapped"] < MIB64  # the tensor came from the heap, not a mapping of its own
    assert kept["free_kept"] >= MIB64  # and its memory is still there, free for the next tensor


def test_opting_out_leaves_glibc_defaults() -> None:
    default = _probe("0")
    assert default["state"] == f"glibc defaults ({ENV}=0)"
    assert default["mapped"] >= MIB64  # its own mapping, given back to the kernel on free
    assert default["free_kept"] < MIB64


@pytest.mark.parametrize("keep", ["1", "0"])
def test_the_deit_command_applies_it_and_the_benchmark_says_so(keep: str) -> None:
    env = {**SUBPROCESS_ENV, ENV: keep, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([*DEIT, "benchmark", "--tasks", "gemm", "--json", "--threads", "1"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    header = json.loads(result.stdout)  # the header's fields, then "rows"
    expected = "glibc keeps freed memory" if keep == "1" else f"glibc defaults ({ENV}=0)"
    assert header["malloc"].startswith(expected)


STUDY = r"""
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from deit.reproduce.execute import start_worker
from deit.runtime.allocator import allocator_setting, keep_freed_memory, keeping_freed_memory

if __name__ == "__main__":
    if sys.argv[1] == "keep":
        keep_freed_memory()
    # as run_chains starts a study's workers
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker,
                             initargs=(os.getpid(), keeping_freed_memory())) as pool:
        print(pool.submit(allocator_setting).result())
"""


@pytest.mark.parametrize("parent", ["keep", "library"])
def test_a_studys_spawned_workers_do_as_their_parent(tmp_path: Path, parent: str) -> None:
    script = tmp_path / "study.py"
    script.write_text(STUDY)
    env = {**SUBPROCESS_ENV, ENV: "1", "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, str(script), parent], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    # a library caller that never asked keeps glibc's defaults in its workers too
    assert out.startswith("glibc keeps freed memory") if parent == "keep" else out == "glibc defaults"
