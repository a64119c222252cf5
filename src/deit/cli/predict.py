"""`deit predict IMAGE... --checkpoint CK`: top-k classes of each image with the checkpoint's own preprocessing."""

from __future__ import annotations

import argparse
import json
import sys

from deit.models.contract import HEAD_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files with a checkpoint: top-k class names and probabilities",
        description="Decodes each image (any mode, EXIF orientation applied), applies the checkpoint's recorded "
        "preprocessing (size, crop ratio, interpolation, mean/std) and prints its top-k classes. A file that "
        "cannot be read gets an error line; the others are still predicted, and the exit code is 1.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or directory (any layout deit reads)")
    p.add_argument("--model", help="registered architecture, for checkpoints that do not carry theirs")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--head", choices=HEAD_MODES, default=None,
                   help="distilled models: avg (the paper's inference: mean of both heads), cls or dist "
                        "(default: the checkpoint's own head mode, avg unless it was changed)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--json", action="store_true", help="print a JSON list: per image its predictions or error")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.checkpoints import load_model
    from deit.inference.predictor import Predictor, format_predictions

    predictor = Predictor(load_model(args.checkpoint, args.model), device=args.device, head=args.head,
                          batch_size=args.batch_size)
    results = predictor.predict(args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_predictions(results))
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"deit predict: error: {len(failed)} of {len(results)} input(s) could not be read: "
              + ", ".join(r.source for r in failed), file=sys.stderr)
        return 1
    return 0
