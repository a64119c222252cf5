"""`deit train --config CONFIG [key=value ...]`: train or distil a model. The same command continues a run that was
stopped (resume=auto); `--fresh` starts over; `--resume RUN_DIR` continues a run with its own config."""

from __future__ import annotations

import argparse
import sys
import time

from deit.cli.errors import CLIError

EXIT_NON_FINITE = 3  # a NaN/inf loss stopped the run (the last good checkpoint is kept)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train or distil a model from a config (preset name or YAML) with key=value overrides",
        description="Train a DeiT (with or without distillation) or a convnet teacher. CONFIG is a preset name "
        "(see --list) or a YAML file; key=value pairs override dotted keys, e.g. optim.lr=1e-3 data.root=/data. "
        "Runs under torchrun for several processes (ranks from the environment).",
    )
    p.add_argument("--config", help="preset name or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, do not train")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped, with "
                   "its own config (the same --config command line does that too: resume=auto)")
    p.add_argument("--fresh", action="store_true", help="start over even if the output dir holds a run: the old "
                   "run is moved aside (to OUTPUT_DIR.prev-DATE-TIME), never deleted (= resume=never)")
    p.add_argument("--budget-minutes", type=float, metavar="N", help="train within N minutes of wall time, "
                   "everything included: a short calibration times the run's own steps, a validation and a save, "
                   "and plans the most epochs (up to the config's epochs) that end in time (= budget_minutes=N)")
    p.add_argument("--list", action="store_true", help="list the built-in presets")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.train.presets import dump_config, list_presets, load_config, load_run_config

    if args.list:
        print("\n".join(list_presets()))
        return 0
    if args.budget_minutes is not None:
        args.overrides = [*args.overrides, f"budget_minutes={args.budget_minutes!r}"]
    if args.resume:
        if args.config or args.fresh:
            raise CLIError("--resume RUN_DIR continues that run with its own config.yaml: drop --config and --fresh "
                           "(key=value overrides still apply)")
        cfg = load_run_config(args.resume, args.overrides)
    elif not args.config:
        raise CLIError("give --config PRESET_OR_YAML (see `deit train --list`), or --resume RUN_DIR")
    else:
        cfg = load_config(args.config, [*args.overrides, *(["resume=never"] if args.fresh else [])])
    if args.dry_run:
        from deit.train.components import follow_data_root

        cfg, data_line = follow_data_root(cfg)  # a data.root that is missing, unreadable or holds no data: exit 2
        print(dump_config(cfg), end="")
        if data_line:
            print(data_line, file=sys.stderr)
        return 0
    from deit.train.calibration import process_seconds
    from deit.train.checkpointing import RunDir
    from deit.train.engine import NonFiniteLossError
    from deit.train.preemption import EXIT_PREEMPTED, Preempted
    from deit.train.runner import default_output_dir, train

    try:
        # A budget counts from the command's start, imports included.
        train(cfg, resume=bool(args.resume), started=time.perf_counter() - process_seconds())
    except NonFiniteLossError:
        return EXIT_NON_FINITE  # the runner has printed the step, lr, loss scale and the kept checkpoint
    except Preempted as exc:
        print(f"deit train: {exc}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        run = RunDir(default_output_dir(cfg))
        print(f"interrupted: the last saved state is in {run.root}; the same command continues from it"
              if run.has_state() else "interrupted before the first save: nothing was kept; the same command starts "
              "over", file=sys.stderr)
        return 130
    return 0
