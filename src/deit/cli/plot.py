"""`deit plot RUN_DIR`: PNG curves (loss, lr, top-1 per head) of a training run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="write PNG curves (loss, lr, top-1 per head) of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.train.plots import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0
