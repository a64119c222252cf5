"""`deit demo [--output DIR]`: train a convnet teacher on digits, distil a DeiT from it, print the results."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a convnet teacher, then a distilled DeiT (hard distillation) on the embedded digits data",
        description="Trains the digits-convnet-teacher preset, then the digits-deit-distilled preset from it, "
        "prints the teacher's and each student head's top-1 and their agreement, and writes both run "
        "directories (with plots) and DIR/summary.json. A few minutes on 2 CPU cores.",
    )
    p.add_argument("--output", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--teacher", dest="teacher_overrides", nargs="*", default=[], metavar="key=value",
                   help="overrides for the teacher's config")
    p.add_argument("--student", dest="student_overrides", nargs="*", default=[], metavar="key=value",
                   help="overrides for the student's config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.train.demo import format_table, run_demo

    summary = run_demo(args.output, args.teacher_overrides, args.student_overrides)
    print(format_table(summary))
    return 0
