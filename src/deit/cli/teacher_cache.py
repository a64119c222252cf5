"""`deit teacher-cache build --config CFG [key=value ...] --output DIR`: the teacher's outputs on a run's data
stream, computed once for every run of that stream; `deit teacher-cache info DIR` describes a cache."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher-cache",
        help="build a teacher-output cache: distil later runs without running the teacher",
        description="The teacher's outputs on every view of a run's data stream (data, augmentation, mixup, seed, "
        "per-device batch, world size) are the same for every student: compute them once here, then train with "
        "distillation.teacher_cache=DIR. Runs under torchrun too (the ranks split the epochs); a stopped build "
        "resumes where it stopped.",
    )
    verbs = p.add_subparsers(dest="cache_command", metavar="VERB")
    verbs.required = True
    b = verbs.add_parser("build", help="run the config's data stream through its teacher once and store the outputs",
                         description="Stores, per epoch and student rank, the teacher's argmax (hard distillation), "
                         "logits (soft) or top-k logits with the remaining mass (soft, many classes). Prints the "
                         "size it will take before it starts.")
    b.add_argument("--config", required=True, help="the training config (preset name or YAML) whose stream to cache")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, as for deit train")
    b.add_argument("--output", required=True, metavar="DIR", help="the cache directory")
    b.add_argument("--outputs", default="auto", choices=("auto", "argmax", "logits", "topk"),
                   help="what to store (auto: argmax for hard distillation; logits for soft, top-k above 100 "
                        "classes)")
    b.add_argument("--top-k", type=int, default=10, metavar="K", help="logits kept per image with --outputs topk")
    b.add_argument("--storage", default="auto", choices=("auto", "bfloat16", "float16", "float32"),
                   help="dtype of stored logits (auto: the teacher's own 16-bit dtype; float32 up to 100 classes)")
    b.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="the teacher's batch, a multiple of the run's per-device batch (default: that batch, which "
                        "gives outputs identical to the live teacher's)")
    b.add_argument("--world-size", type=int, default=1, metavar="W",
                   help="the world size of the runs that will read the cache (default 1)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)
    i = verbs.add_parser("info", help="describe a cache: its stream, what it stores, which parts are there")
    i.add_argument("cache", metavar="DIR")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)


def run_build(args: argparse.Namespace) -> int:
    from deit.train.cache_build import BuildOptions, build_cache
    from deit.train.presets import load_config

    if args.world_size < 1 or args.top_k < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise ValueError("--world-size, --top-k and --batch-size must be >= 1")
    cfg = load_config(args.config, args.overrides)
    opts = BuildOptions(outputs=args.outputs, top_k=args.top_k, storage=args.storage, batch_size=args.batch_size,
                        world_size=args.world_size, progress=not args.no_progress)
    build_cache(cfg, args.output, opts)
    return 0


def run_info(args: argparse.Namespace) -> int:
    from deit.train.teacher_cache import describe_cache

    info = describe_cache(args.cache)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(f"{k}: {v}" for k, v in info.items() if k != "key"))
    return 0
