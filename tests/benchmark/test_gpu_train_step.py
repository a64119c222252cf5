"""benchmarks/gpu_train_step.py (run on a GPU by benchmarks/gpu_check.sh) works on the CPU with a tiny model: every
variant it times is a real training step, and the device stage is timed where it runs; gpu_check.sh parses, and its
dry run (DRY_RUN=1) runs its train steps on the CPU and writes its report."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_train_step.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_variant_trains_and_reports_its_rate(tmp_path):
    bench = _load()
    args = bench.parser().parse_args([
        "--device", "cpu", "--dtype", "fp32", "--batch", "4", "--steps", "1", "--warmup", "1", "--photos", "4",
        "--sides", "40,60", "--img-size", "32", "--variants", "worker,device", "--output", str(tmp_path / "r.json"),
        "--model-args", '{"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}'])
    report = bench.run(args)
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"worker", "device"} and report["model"] == "deit_small_distilled_patch16_224"
    assert all(r["images_per_s"] > 0 and r["mfu_pct"] is None for r in rows.values())  # no datasheet peak on a CPU
    assert rows["device"]["device_stage_ms_per_image"] > 0 and "device_stage_ms_per_image" not in rows["worker"]
    assert json.loads((tmp_path / "r.json").read_text()) == report  # what gpu_check.sh collects


def test_the_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")]).returncode == 0


def test_the_gpu_check_script_dry_runs_its_train_steps_on_the_cpu(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "VARIANTS": "worker,device", "OUT": str(tmp_path), "PY": sys.executable,
           "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert report["ok"] and not steps["deit_s_train_step"].get("skipped")
    assert steps["cuda_tests"]["skipped"] and steps["demo_epoch_bf16"]["skipped"]  # the GPU-only ones
    for name in ("deit_s_train_step", "deit3_s_train_step"):
        rows = {r["variant"]: r for r in report[name]}
        assert set(rows) == {"worker", "device"} and rows["device"]["device_stage_ms_per_image"] > 0
