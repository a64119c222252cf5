"""`deit data check PATH`: classes, images per class, unreadable files, empty classes, train/val mismatch."""

from __future__ import annotations

import argparse
import json
import os

from deit.data.check import checkable_formats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect a data set (deit data check PATH)")
    verbs = p.add_subparsers(dest="data_command", metavar="VERB")
    verbs.required = True
    c = verbs.add_parser("check", help="check a data set: classes, counts, unreadable files; exit 1 on problems",
                         description="Check a data set before training. Exit code 0: no problems; 1: problems "
                                     "found (listed); 2: the path or options are wrong.")
    c.add_argument("path", help="imagefolder root, csv file or folder with train.csv/val.csv, or a CIFAR "
                                "python archive / extracted folder")
    c.add_argument("--format", choices=checkable_formats(), default=None,
                   help="data set format (default: detected from the path)")
    c.add_argument("--no-decode", action="store_true", help="check the layout only; do not decode every image")
    c.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="threads decoding images (default: min(8, cores))")
    c.add_argument("--per-class", action=argparse.BooleanOptionalAction, default=None,
                   help="print the images-per-class table (default: when there are at most 30 classes)")
    c.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="as data.val_fraction: the part of each class a one-folder (or one-csv) data set holds out "
                        "for validation (default: %(default)s)")
    c.add_argument("--split-seed", type=int, default=0, metavar="S", help="as data.split_seed (default: 0)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch the data sub-verb (only `check` today)."""
    from deit.data.check import check_dataset

    report = check_dataset(args.path, args.format, decode=not args.no_decode, workers=args.workers,
                           val_fraction=args.val_fraction, split_seed=args.split_seed)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text(args.per_class))
    return 0 if report.ok else 1
