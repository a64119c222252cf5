"""`deit benchmark`: images/s of our DeiT against HF transformers' DeiT with the same weights, in the same run."""

from __future__ import annotations

import argparse
import sys

from deit.benchmark.common import TASKS
from deit.models.attention import ATTN_IMPL_HELP, ATTN_IMPLS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="inference / training-step / data images/s, ours vs HF transformers (same weights), %% of a GEMM",
        description="Times our models and HF transformers' DeiT/ViT loaded with the same weights (converted by "
        "deit.checkpoints.export_hf) in alternating rounds of one process: median images/s, spread, the ratio "
        "ours/HF (the faster of HF's eager and sdpa attention), achieved FLOP/s as a share of a GEMM timed in the "
        "same rounds, peak memory of a training step, and the data pipeline's images/s per worker.",
    )
    p.add_argument("--quick", action="store_true",
                   help="DeiT-Ti only, 3 rounds, no teacher-in-the-loop row (under 2 minutes on 2 CPU cores)")
    p.add_argument("--json", action="store_true", help="print JSON (header + rows) instead of the table")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="fp32, or bf16 autocast (both models; the GEMM runs natively in bf16)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile ours and HF's alike, as deit train's compile=true does (inference: the "
                        "forward; training: forward + loss, and so their backward), after one eager call each; our "
                        "eager model runs in the same rounds (compiled/eager in the notes, with compile times)")
    p.add_argument("--attn-impl", default="auto", choices=ATTN_IMPLS, help="our model's " + ATTN_IMPL_HELP)
    p.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "deit_small_patch16_224"],
                   help="models for inference (default: DeiT-Ti and DeiT-S at 224)")
    p.add_argument("--train-models", nargs="+", default=["deit_tiny_distilled_patch16_224"],
                   help="distilled models for the training step (default: DeiT-Ti distilled)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64], help="inference batch sizes (default 64)")
    p.add_argument("--train-batch-size", type=int, default=64, help="training-step batch size (default 64)")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: each model's own)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="what to measure (default: all)")
    p.add_argument("--teacher", default=None,
                   help="teacher of train+teacher and train+cache, e.g. regnety_160 (the paper's RegNetY-16GF; "
                        "default: regnety_002 on CPU, regnety_160 on CUDA)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per inference figure (default 5)")
    p.add_argument("--train-repeats", type=int, default=3, help="timed rounds per training figure (default 3)")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads (default 2, the setting of docs/results/benchmark-cpu.md; 0: torch's default)")
    p.add_argument("--no-peer", action="store_true", help="time our models only, not HF's")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.benchmark import BenchmarkConfig, format_table, quick_config, run_benchmark, to_json

    config = BenchmarkConfig(
        models=tuple(args.models),
        train_models=tuple(args.train_models),
        batch_sizes=tuple(args.batch_sizes),
        train_batch_size=args.train_batch_size,
        dtype=args.dtype,
        device=args.device,
        compile=args.compile,
        attn_impl=args.attn_impl,
        tasks=tuple(args.tasks),
        repeats=args.repeats,
        train_repeats=args.train_repeats,
        teacher=args.teacher,
        threads=args.threads or None,
        peer=not args.no_peer,
        img_size=args.img_size,
    )
    if args.quick:
        config = quick_config(config)
    header, rows = run_benchmark(config, progress=lambda message: print(f"[benchmark] {message}", file=sys.stderr))
    print(to_json(rows, header) if args.json else format_table(rows, header))
    return 0
