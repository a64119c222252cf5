"""benchmarks/profile_step.py, the profile behind docs/results/benchmark-cpu.md's "where the time goes", still runs
against the library as it is (it once broke silently when the distillation loss was split from the teacher)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_profile_step_prints_the_four_profiles():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--batch", "1",
                           "--threads", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("inference ours", "inference hf-sdpa", "train ours", "train hf-sdpa"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(label))
        shares = {kind: int(pct) for kind, pct in re.findall(r"([a-z/]+) (\d+)%", line)}
        assert shares["gemm"] > 30 and 95 <= sum(shares.values()) <= 105, line
