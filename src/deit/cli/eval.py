"""`deit eval --checkpoint CK --data DATA`: loss and top-1/top-5 of every head (and a teacher's, with --teacher)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--set", dest="data_overrides", nargs="*", default=[], metavar="key=value",
                   help="data settings (e.g. img_size=32, val_fraction=0.2)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def data_config(spec: str, batch_size: int, workers: int, input_size: int, overrides: list[str]):
    """A DataConfig for ``--data``: a built-in name, or a path whose kind is recognised."""
    from deit.data.config import DATASETS, DataConfig
    from deit.train.config import from_dict, parse_override

    fields: dict = {"batch_size": batch_size, "num_workers": workers, "img_size": input_size}
    if spec in DATASETS:
        fields["dataset"] = spec
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"--data {spec}: neither a built-in data set ({', '.join(DATASETS)}) nor a path")
        name = path.name.lower()
        if name.startswith("cifar-100"):
            kind = "cifar100"
        elif name.startswith("cifar-10"):
            kind = "cifar10"
        elif path.suffix.lower() == ".csv" or (path.is_dir() and (path / "train.csv").exists()):
            kind = "csv"
        else:
            kind = "imagefolder"
        fields.update(dataset=kind, root=str(path))
    for item in overrides:
        keys, value = parse_override(item)
        fields[".".join(keys)] = value
    return from_dict(DataConfig, fields, prefix="--set ")


def load_model(path: str, model_name: str | None):
    from deit.checkpoints import load_checkpoint
    from deit.models import create_model

    if model_name:
        return create_model(model_name, pretrained=path)
    return load_checkpoint(path)


def run(args: argparse.Namespace) -> int:
    import torch

    from deit.data import build_dataset, build_loader
    from deit.models import Preprocessing
    from deit.train.distributed import cleanup, init_distributed
    from deit.train.engine import evaluate
    from deit.train.loss import freeze_teacher

    env = init_distributed(args.device)
    try:
        model = load_model(args.checkpoint, args.model).to(env.device)
        pre = getattr(model, "preprocessing", None) or Preprocessing()
        cfg = data_config(args.data, args.batch_size, args.workers, pre.input_size, args.data_overrides)
        dataset = build_dataset(cfg, args.split)
        n_model = getattr(model, "num_classes", None)
        if n_model is not None and n_model != len(dataset.classes):
            raise ValueError(f"the checkpoint predicts {n_model} classes but {args.data} has {len(dataset.classes)}")
        loader = build_loader(cfg, args.split, preprocessing=pre, dataset=dataset, augment=False,
                              distributed=(env.world_size, env.rank))
        teacher_fn = None
        if args.teacher:
            teacher = freeze_teacher(load_model(args.teacher, args.teacher_model).to(env.device))

            def teacher_fn(x: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return teacher(x).float()

        metrics = evaluate(model, loader, env, teacher_fn, args.amp)
    finally:
        cleanup(env)
    if env.is_main:
        if args.json:
            print(json.dumps(metrics, indent=2))
        else:
            print(f"{args.checkpoint} on {args.data} ({args.split}, {metrics['num_samples']} images)")
            for key, value in metrics.items():
                if key != "num_samples":
                    print(f"  {key:<14}{value:.4f}")
    return 0
