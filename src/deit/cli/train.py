"""`deit train --config CONFIG [key=value ...]`: train or distil a model; `--resume RUN_DIR` continues a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_NON_FINITE = 3


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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--list", action="store_true", help="list the built-in presets")
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace):
    from deit.train.config import ConfigError
    from deit.train.presets import load_config

    overrides = list(args.overrides)
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); nothing to resume")
        if args.config:
            raise ConfigError("--resume reads the run's own config.yaml; drop --config (overrides still apply)")
        return load_config(saved, [*overrides, f"output_dir={run_dir}"])
    if not args.config:
        raise ConfigError("give --config PRESET_OR_YAML (see `deit train --list`), or --resume RUN_DIR")
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from deit.train.presets import dump_config, list_presets

    if args.list:
        print("\n".join(list_presets()))
        return 0
    cfg = resolve(args)
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    from deit.train.engine import NonFiniteLossError
    from deit.train.runner import default_output_dir, train

    try:
        train(cfg, resume=bool(args.resume))
    except NonFiniteLossError:
        return EXIT_NON_FINITE  # the runner has printed the step, lr, loss scale and the kept checkpoint
    except KeyboardInterrupt:
        print(f"interrupted; continue with `deit train --resume {default_output_dir(cfg)}`", file=sys.stderr)
        return 130
    return 0
