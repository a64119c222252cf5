"""The demo: a convnet teacher, then a DeiT distilled from it (hard distillation), on the embedded digits data."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from deit.runtime.files import atomic_write_text
from deit.runtime.locks import LockHeld
from deit.train.checkpointing import RunDir
from deit.train.config import ConfigError
from deit.train.presets import load_config
from deit.train.resume import in_use

TEACHER_PRESET = "digits-convnet-teacher"
STUDENT_PRESET = "digits-deit-distilled"


def _clear_previous(run_dir: Path) -> None:
    """Remove a run directory this demo wrote before (recognised by its config.yaml), so a rerun starts fresh;
    never one a live run is working in."""
    if (run_dir / "config.yaml").is_file():
        run = RunDir(run_dir)
        try:
            run.claim()
        except LockHeld as exc:
            raise ConfigError(in_use(run, exc)) from None
        shutil.rmtree(run_dir)
        run.release()


def run_demo(output: str | Path = "runs/demo", teacher_overrides=(), student_overrides=()) -> dict:
    """Train both runs under ``output`` and write ``output/summary.json``; returns the summary."""
    from deit.train.runner import train

    started = time.perf_counter()
    out = Path(output)
    teacher_dir, student_dir = out / "teacher", out / "student"
    # Both configs are checked before anything trains: a bad student override must not cost a teacher run.
    teacher_cfg = load_config(TEACHER_PRESET, [f"output_dir={teacher_dir}", *teacher_overrides])
    student_cfg = load_config(STUDENT_PRESET, [f"output_dir={student_dir}",
                                               f"teacher.checkpoint={teacher_dir / 'best.safetensors'}",
                                               *student_overrides])
    for d in (teacher_dir, student_dir):
        _clear_previous(d)
    print(f"== 1/2: teacher ({TEACHER_PRESET}) -> {teacher_dir}", flush=True)
    teacher_run = train(teacher_cfg)
    print(f"== 2/2: distilled student ({STUDENT_PRESET}) -> {student_dir}", flush=True)
    student_run = train(student_cfg)
    final = student_run.summary["final"]
    summary = {
        "teacher_top1": final["teacher_top1"],
        "student_top1_avg": final["top1"],
        "student_top1_cls": final["top1_cls"],
        "student_top1_dist": final["top1_dist"],
        "agreement": final["agreement"],
        "seconds": round(time.perf_counter() - started, 1),
        "teacher_seconds": teacher_run.summary["seconds"],
        "student_seconds": student_run.summary["seconds"],
        "teacher_run": str(teacher_dir),
        "student_run": str(student_dir),
        "val_images": final["num_samples"],
        "dataset": f"digits (scikit-learn), {student_cfg.data.img_size} px",
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def format_table(summary: dict) -> str:
    rows = [
        ("teacher (convnet)", summary["teacher_top1"]),
        ("student, class head", summary["student_top1_cls"]),
        ("student, distillation head", summary["student_top1_dist"]),
        ("student, average of heads", summary["student_top1_avg"]),
        ("student-teacher agreement", summary["agreement"]),
    ]
    lines = [f"{'digits validation (' + str(summary['val_images']) + ' images)':<32}{'top-1':>8}", "-" * 40]
    lines += [f"{name:<32}{value:>8.4f}" for name, value in rows]
    lines.append(f"{'total time':<32}{summary['seconds']:>7.0f}s")
    return "\n".join(lines)


__all__ = ["format_table", "run_demo"]
