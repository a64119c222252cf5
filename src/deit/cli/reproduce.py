"""`deit reproduce`: the paper's distillation study (digits, or 32 px natural images), mean ± std over seeds, within a
time budget."""

from __future__ import annotations

import argparse
import shlex
import sys


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def _epochs(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected EPOCHS or TEACHER,STUDENT epochs >= 1, got {text!r}")
    return values[0], values[1]


def _command(args: argparse.Namespace, regime, budget: float) -> str:
    """The command line of this study, every setting spelled out (it heads table.md)."""
    parts = ["deit", "reproduce", "--regime", regime.name, *(["--root", args.root] if args.root else []),
             "--train-per-class", str(regime.train_per_class or 0), "--seeds", ",".join(str(s) for s in args.seeds),
             "--budget-minutes", f"{budget:g}", "--output", args.output]
    if args.workers is not None:
        parts += ["--workers", str(args.workers)]
    for flag, value in (("--epochs", args.epochs), ("--schedule", args.schedule)):
        if value is not None:
            parts += [flag, f"{value[0]},{value[1]}"]
    for flag, values in (("--set", args.overrides), ("--student-set", args.student_overrides)):
        if values:
            parts += [flag, *values]
    if not args.teacher_cache:
        parts.append("--no-teacher-cache")
    return " ".join(shlex.quote(p) for p in parts)


def _former_dataset(text: str) -> str:
    """``--dataset``, the former spelling of ``--regime``: a regime's name, else the one line naming the new one."""
    from deit.reproduce.regime import REGIMES

    if text in REGIMES:
        return text
    raise argparse.ArgumentTypeError(
        f"--dataset is now --regime ({', '.join(REGIMES)}) and data.root decides the format: for 32 px images in "
        "folders (ROOT/train/CLASS/*.jpg and ROOT/test/ or val/, e.g. the CIFAR-10 JPEGs) use --regime cifar10 "
        "--root DIR")


def register(sub: argparse._SubParsersAction) -> None:
    from deit.reproduce.regime import CIFAR_REGIME, DEFAULT_REGIME, REGIMES

    r = DEFAULT_REGIME
    p = sub.add_parser(
        "reproduce",
        help="the paper's distillation study (convnet teacher, DeiT with/without distillation) over seeds",
        description="For every seed, on one small training split: trains a convnet teacher, a DeiT without "
        "distillation, a DeiT distilled into its class token (soft, hard) and a DeiT with a distillation token "
        "(hard, soft; each head reported), all within --budget-minutes: a short calibration measures each "
        "method's cost per epoch and the epochs are scaled to fit. Writes DIR/results.json, DIR/table.md, "
        "DIR/table.png and DIR/runs/, and prints the table with the paper's claims checked against seed noise.",
    )
    p.add_argument("--regime", default=r.name, choices=tuple(REGIMES),
                   help="the study's presets, images per class, schedule and budget (default: %(default)s): digits, "
                        "scikit-learn's digits at 16 px; cifar10, natural images at 32 px: the CIFAR-10 archive "
                        "(downloaded once) or what --root holds")
    p.add_argument("--dataset", dest="former_dataset", type=_former_dataset, default=None, metavar="REGIME",
                   help="deprecated spelling of --regime")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="the data's archive or folder, its format detected (e.g. the CIFAR-10 JPEGs: "
                        "ROOT/train/CLASS/*.jpg and ROOT/test/CLASS/*.jpg)")
    p.add_argument("--train-per-class", type=int, default=None, metavar="N",
                   help=f"training images per class, one fixed stratified subset (default: digits "
                        f"{r.train_per_class}, cifar10 {CIFAR_REGIME.train_per_class}; 0: all)")
    p.add_argument("--seeds", type=_int_list, default=(0, 1, 2), metavar="S,S,...",
                   help="seeds, comma-separated (default: 0,1,2)")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help=f"wall-clock budget for the whole study (default: digits {r.budget_minutes:g}, "
                        f"cifar10 {CIFAR_REGIME.budget_minutes:g})")
    p.add_argument("--output", default="runs/reproduce", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=_epochs, default=None, metavar="E|T,S",
                   help="fixed epochs (all runs, or teacher,students) instead of the budget plan; no calibration "
                   f"(the regime's schedule: teacher {r.teacher_epochs}, students {r.student_epochs})")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="training runs at once, each in its own process with the runs' torch threads (the digits "
                   "presets' threads: 1); results do not depend on it (default: available CPU cores / threads)")
    p.add_argument("--resume", metavar="DIR", default=None,
                   help="finish the interrupted study in DIR with its own plan, seeds and regime (study.json); "
                   "finished runs are kept, interrupted ones continue from their last epoch; only --workers applies")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="key=value",
                   help="config overrides for every run (teacher and students), e.g. data.scale=[0.3,1.0]")
    p.add_argument("--student-set", dest="student_overrides", nargs="+", default=[], metavar="key=value",
                   help="config overrides for the students only, e.g. optim.lr=1e-3")
    p.add_argument("--schedule", type=_epochs, default=None, metavar="T,S",
                   help="the target schedule (teacher,student epochs) the budget plan scales down from")
    p.add_argument("--no-teacher-cache", dest="teacher_cache", action="store_false",
                   help="every distilled student runs the teacher itself (default: each seed builds one "
                        "teacher-output cache that its distilled students read)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.reproduce.regime import regime_named
    from deit.reproduce.study import StudyConfig, resume_study, run_study

    if args.resume is not None:
        resume_study(args.resume, workers=args.workers)
        return 0
    if args.former_dataset is not None:
        print(f"note: --dataset is deprecated: use --regime {args.former_dataset}", file=sys.stderr)
        args.regime = args.former_dataset
    regime = regime_named(args.regime).with_user_settings(
        train_per_class=args.train_per_class, root=args.root, overrides=tuple(args.overrides),
        student_overrides=tuple(args.student_overrides), schedule=args.schedule, teacher_cache=args.teacher_cache)
    budget = args.budget_minutes if args.budget_minutes is not None else regime.budget_minutes
    cfg = StudyConfig(output=args.output, seeds=args.seeds, budget_minutes=budget, regime=regime,
                      epochs=args.epochs, command=_command(args, regime, budget), workers=args.workers)
    run_study(cfg)
    return 0
