"""`deit predict IMAGE_OR_FOLDER... --checkpoint CK [--output preds.csv|preds.jsonl]`: top-k classes of each image
with the checkpoint's own preprocessing."""

from __future__ import annotations

import argparse
import json
import sys

from deit.models.attention import ATTN_IMPL_HELP, ATTN_IMPLS
from deit.models.contract import HEAD_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files with a checkpoint: top-k class names and probabilities",
        description="Decodes each image (any mode, EXIF orientation applied), applies the checkpoint's recorded "
        "preprocessing (size, crop ratio, interpolation, mean/std) and prints its top-k classes. A file that "
        "cannot be read gets an error line; the others are still predicted, and the exit code is 1. A folder "
        "stands for every image file in it and below.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or directory (any layout deit reads)")
    p.add_argument("--model", help="registered architecture, for checkpoints that do not carry theirs")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--head", choices=HEAD_MODES, default=None,
                   help="distilled models: avg (the paper's inference: mean of both heads), cls or dist "
                        "(default: the checkpoint's own head mode, avg unless it was changed)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--attn-impl", default="auto", choices=ATTN_IMPLS, help=ATTN_IMPL_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--json", action="store_true", help="print a JSON list: per image its predictions or error")
    p.add_argument("--output", metavar="FILE", help="write the predictions to FILE, .csv or .jsonl (the format from "
                   "the suffix): per image its path, top-k labels and probabilities (every head's too for a "
                   "distilled model) or its error")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.checkpoints import load_model
    from deit.inference.prediction_files import output_suffix, write_predictions
    from deit.inference.predictor import Predictor, collect_images, format_predictions

    if args.output:
        output_suffix(args.output)  # a bad name fails now, before any work
    images = collect_images(args.images)
    predictor = Predictor(load_model(args.checkpoint, args.model), device=args.device, head=args.head,
                          batch_size=args.batch_size, attn_impl=args.attn_impl)
    results = predictor.predict(images, top_k=args.top_k, every_head=bool(args.output))
    if args.output:
        write_predictions(results, args.output, predictor.head_names)
        print(f"wrote {len(results)} prediction(s) to {args.output}")
    elif args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(format_predictions(results))
    failed = [r for r in results if not r.ok]
    if failed:
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        print(f"deit predict: error: {len(failed)} of {len(results)} input(s) could not be read: "
              + ", ".join(r.source for r in failed[:10]) + more, file=sys.stderr)
        return 1
    return 0
