"""The scripts behind docs/results/benchmark-cpu.md still run against the library as it is: profile_step.py ("where
the time goes") and ablations.py (each speed idea against the shipped code). Both once broke silently when the
distillation loss was split from the teacher."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args, "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_profile_step_prints_the_four_profiles():
    out = run_script("profile_step.py", "--batch", "1")
    for label in ("inference ours", "inference hf-sdpa", "train ours", "train hf-sdpa"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        shares = {kind: int(pct) for kind, pct in re.findall(r"([a-z/]+) (\d+)%", line)}
        assert shares["gemm"] > 30 and 95 <= sum(shares.values()) <= 105, line


def test_ablations_time_each_idea_against_the_shipped_code():
    out = run_script("ablations.py", "--only", "tiny", "train", "--batch", "1", "--repeats", "1")
    ratios = re.findall(r"^(deit_tiny\S* (?:inference|train step): .+?)\s+variant .* ratio\s+([\d.]+)$", out, re.M)
    titles = [title for title, _ in ratios]
    assert "deit_tiny_patch16_224 inference: every token through the last block" in titles
    assert "deit_tiny_patch16_224 inference: oneDNN linears on plain-layout (unpacked) weights" in titles
    assert "deit_tiny_distilled_patch16_224 train step: every token through the last block" in titles
    assert len(ratios) >= 8 and all(float(r) > 0 for _, r in ratios)
