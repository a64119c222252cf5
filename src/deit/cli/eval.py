"""`deit eval --checkpoint CK --data DATA`: loss and top-1/top-5 of every head (and a teacher's, with --teacher)."""

from __future__ import annotations

import argparse
import json
import sys

from deit.inference.evaluation import TTA_MODES
from deit.models.attention import ATTN_IMPL_HELP, ATTN_IMPLS
from deit.runtime.precision import AMP_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: loss, top-1/top-5 of the class, distillation and average heads",
        description="Evaluate a checkpoint on a data set's validation split. Runs under torchrun too, counting "
        "every sample exactly once.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file (any layout deit reads)")
    p.add_argument("--model", help="registered architecture, for checkpoints that do not carry theirs")
    p.add_argument("--data", required=True,
                   help="a built-in data set (digits, synthetic), or a path: an image folder, a .csv file, or a "
                        "CIFAR archive/folder")
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--teacher", help="a teacher checkpoint: also report its top-1 and the agreement")
    p.add_argument("--teacher-model", help="registered architecture of the teacher checkpoint, if needed")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=AMP_MODES,
                   help="mixed precision (default auto: bf16 where the hardware computes it natively, fp32 elsewhere, "
                        "as deit train resolves it, so a run's checkpoint scores what the run measured)")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation: flip averages each head's logits over the image and its mirror "
                        "image (default: none)")
    p.add_argument("--attn-impl", default="auto", choices=ATTN_IMPLS, help=ATTN_IMPL_HELP)
    p.add_argument("--set", dest="data_overrides", nargs="*", default=[], metavar="key=value",
                   help="data settings (e.g. img_size=32, val_fraction=0.2)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.inference.evaluation import evaluate_checkpoint
    from deit.runtime.distributed import launched_rank

    metrics = evaluate_checkpoint(
        args.checkpoint, args.data, architecture=args.model, split=args.split, batch_size=args.batch_size,
        workers=args.workers, teacher=args.teacher, teacher_architecture=args.teacher_model, device=args.device,
        amp=args.amp, overrides=args.data_overrides, tta=args.tta, attn_impl=args.attn_impl,
        log=lambda line: print(line, file=sys.stderr if args.json else sys.stdout, flush=True),
    )
    if launched_rank() != 0:
        return 0
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        tta = ", flip test-time augmentation" if args.tta == "flip" else ""
        print(f"{args.checkpoint} on {args.data} ({args.split}, {metrics['num_samples']} images{tta})")
        rows = {k: v for k, v in metrics.items() if k != "num_samples"}
        width = max(map(len, rows), default=0) + 2  # a column, whatever the longest name (agreement_dist)
        for key, value in rows.items():
            print(f"  {key:<{width}}{value:.4f}")
    return 0
