"""Teacher-output caches on the digits study's stream: what each kind costs on disk, how fast it builds, how far a
teacher batch other than the run's moves the argmax, and what keeping only the top-k logits costs the soft-distilled
student's accuracy.

Run: python benchmarks/bench_teacher_cache.py --teacher runs/reproduce/runs/seed0/teacher/last.safetensors
      [--out runs/bench-teacher-cache] [--ks 1,2,5] [--epochs 300]
Prints one JSON. The students train on the study's regime (deit reproduce's default), seed 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from deit.reproduce.methods import get_method
from deit.reproduce.regime import DEFAULT_REGIME
from deit.reproduce.runs import method_config, run_method
from deit.train.cache_build import BuildOptions, build_cache
from deit.train.teacher_cache import part_path, read_meta


def build(cfg, out: Path, **options) -> dict:
    start = time.perf_counter()
    meta = build_cache(cfg, out, BuildOptions(progress=False, **options))
    seconds = time.perf_counter() - start
    images = meta.samples * meta.ranks * cfg.epochs
    return {"outputs": meta.outputs, "storage": meta.storage, "top_k": meta.top_k,
            "teacher_batch": meta.teacher_batch_size, "bytes_per_image_view": meta.bytes_per_sample,
            "seconds": round(seconds, 1),
            "images_per_s": round(images / seconds, 1)}


def argmax_agreement(a: Path, b: Path, epochs: int) -> float:
    ma, mb = read_meta(a), read_meta(b)
    same = total = 0
    for e in range(epochs):
        ra = np.fromfile(part_path(a, e, 0), dtype=ma.record_dtype())
        rb = np.fromfile(part_path(b, e, 0), dtype=mb.record_dtype())
        la = ra["logits"].view(np.float32) if ma.storage == "float32" else ra["logits"].astype(np.float32)
        lb = rb["logits"].view(np.float32) if mb.storage == "float32" else rb["logits"].astype(np.float32)
        same += int((la.argmax(1) == lb.argmax(1)).sum())
        total += len(ra)
    return same / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/bench-teacher-cache"))
    p.add_argument("--ks", default="1,2,5")
    p.add_argument("--epochs", type=int, default=DEFAULT_REGIME.student_epochs)
    args = p.parse_args()
    student = get_method("deit-dist-soft")
    cfg = method_config(student, DEFAULT_REGIME, seed=0, epochs=args.epochs, run_dir=args.out / "unused",
                        teacher_checkpoint=args.teacher)
    report: dict = {"builds": {}}
    for name, options in {"argmax": {"outputs": "argmax"}, "logits": {"outputs": "logits"},
                          "logits-fp16": {"outputs": "logits", "storage": "float16"},
                          "logits-batch128": {"outputs": "logits", "batch_size": 4 * cfg.data.batch_size},
                          **{f"top{k}": {"outputs": "topk", "top_k": int(k)} for k in args.ks.split(",")}}.items():
        report["builds"][name] = build(cfg, args.out / name, **options)
    report["argmax_agreement_teacher_batch_128_vs_32"] = argmax_agreement(args.out / "logits",
                                                                          args.out / "logits-batch128", args.epochs)
    report["argmax_agreement_fp16_vs_fp32_storage"] = argmax_agreement(args.out / "logits", args.out / "logits-fp16",
                                                                       args.epochs)
    report["students"] = {}
    for name in ["logits", *(f"top{k}" for k in args.ks.split(","))]:
        outcome = run_method(student, DEFAULT_REGIME, seed=0, epochs=args.epochs, run_dir=args.out / f"student-{name}",
                             teacher_checkpoint=args.teacher, teacher_cache=args.out / name)
        report["students"][name] = {r["method"]: round(100 * r["top1"], 2) for r in outcome.rows}
        print(json.dumps({name: report["students"][name]}), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
