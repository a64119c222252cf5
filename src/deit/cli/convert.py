"""`deit convert SRC DST`: any supported checkpoint layout in, our .safetensors (or official / HF) out."""

from __future__ import annotations

import argparse
from pathlib import Path

from deit.cli.errors import CLIError
from deit.models.contract import HEAD_MODES
from deit.models.preprocessing import INTERPOLATIONS

# The flag of this command that sets each thing a weights-only layout (official, timm) cannot record.
RESTORING_FLAGS = {"num_heads": "--num-heads", "head_mode": "--head-mode", "mean": "--mean", "std": "--std",
                   "crop_pct": "--crop-pct", "interpolation": "--interpolation"}
WEIGHTS_ONLY = ("official", "timm", "openmmlab")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (official, timm, OpenMMLab, HF transformers, ours) to our .safetensors layout "
        "or another",
        description="Read SRC in any supported layout (detected from its keys), optionally adapt it, and write "
        "DST. By default DST is our .safetensors layout, which records the architecture, class count, image "
        "size and preprocessing; --to official writes {'model': state_dict} .pth (DeiT III: the gamma_1/gamma_2 "
        "names of models_v2.py), --to timm a bare state dict (.pth or .safetensors), --to openmmlab an mmpretrain "
        "{'meta', 'state_dict'} .pth, --to hf a save_pretrained directory (DeiT only: transformers has no DeiT "
        "III). The official, timm and openmmlab layouts hold weights only: convert says what they drop, and "
        "--num-heads, --head-mode, --mean, --std, --crop-pct and "
        "--interpolation put it back when converting such a file to ours.",
    )
    p.add_argument("src", help="checkpoint file, or a transformers save_pretrained directory")
    p.add_argument("dst", help="output: a .safetensors file (default), a .pth (--to official, --to openmmlab), a "
                   ".pth or .safetensors (--to timm) or a directory (--to hf)")
    p.add_argument("--num-classes", type=int, default=None, help="new class count: re-initialises both heads")
    p.add_argument("--img-size", type=int, default=None, help="new native resolution: resamples pos_embed")
    p.add_argument("--head-mode", choices=HEAD_MODES, default=None, help="what a distilled model's forward returns")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, when the file cannot tell and the width is not DeiT's (192/384/768)")
    p.add_argument("--mean", type=_floats, default=None, metavar="R,G,B",
                   help="normalisation mean the model expects (e.g. 0.485,0.456,0.406)")
    p.add_argument("--std", type=_floats, default=None, metavar="R,G,B",
                   help="normalisation std the model expects (e.g. 0.229,0.224,0.225)")
    p.add_argument("--crop-pct", type=float, default=None,
                   help="centre-crop fraction of the resized image (0.875: resize 256, crop 224; 1.0: no crop)")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize interpolation")
    p.add_argument("--to", choices=("deit", *WEIGHTS_ONLY, "hf"), default="deit",
                   help="output layout (default: deit)")
    p.add_argument("--hf-layout", choices=("v5", "legacy"), default="v5",
                   help="tensor names for --to hf: transformers 5.x (v5) or <= 4.x (legacy)")
    p.set_defaults(func=run)


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers (e.g. 0.5,0.5,0.5)") from None
    return values


def run(args: argparse.Namespace) -> int:
    from deit.checkpoints import (
        export_hf,
        load_checkpoint_with_report,
        save_checkpoint,
        save_official,
        save_openmmlab,
        save_timm,
    )

    dst = Path(args.dst)
    if args.to == "deit" and dst.suffix != ".safetensors":
        raise CLIError(
            f"{dst}: our layout is a .safetensors file; name it {dst.with_suffix('.safetensors').name}, or pass "
            "--to official for a .pth or --to hf for a transformers directory"
        )
    if args.to in ("official", "openmmlab") and dst.suffix not in (".pth", ".pt"):
        raise CLIError(f"{dst}: --to {args.to} writes a pickle; name it {dst.with_suffix('.pth').name}")
    if args.to == "timm" and dst.suffix not in (".pth", ".pt", ".safetensors"):
        raise CLIError(f"{dst}: --to timm writes a .pth pickle or a .safetensors; name it {dst.stem}.pth or "
                       f"{dst.stem}.safetensors")
    overrides = {
        k: v
        for k, v in (
            ("num_classes", args.num_classes),
            ("img_size", args.img_size),
            ("head_mode", args.head_mode),
            ("num_heads", args.num_heads),
        )
        if v is not None
    }
    preprocessing = {k: v for k, v in (("mean", args.mean), ("std", args.std), ("crop_pct", args.crop_pct),
                                       ("interpolation", args.interpolation)) if v is not None}
    model, report = load_checkpoint_with_report(args.src, preprocessing=preprocessing, **overrides)
    info = report.info
    print(f"read {info.source}")
    print(f"  detected: {info.describe()}")
    pre = model.preprocessing
    print(
        f"  preprocessing: {pre.input_size} px, crop {pre.crop_pct:g} (resize {pre.resize_size}), "
        f"{pre.interpolation}, mean {pre.mean}, std {pre.std}"
    )
    if model.class_names:
        print(f"  class names: {len(model.class_names)} ({', '.join(model.class_names[:5])}...)")
    for note in info.notes:
        print(f"  note: {note}")
    if report.changes:
        print("changed:")
        for change in report.changes:
            print(f"  {change}")
    else:
        print("changed: nothing (weights copied as they are)")
    if args.to == "deit":
        save_checkpoint(model, dst)
        what = "deit .safetensors (architecture, classes, image size and preprocessing in its metadata)"
    elif args.to in WEIGHTS_ONLY:
        save, what = {"official": (save_official, "official layout {'model': state_dict}"),
                      "timm": (save_timm, "timm layout (bare state dict)"),
                      "openmmlab": (save_openmmlab, "OpenMMLab layout {'meta', 'state_dict'}, mmpretrain's names")
                      }[args.to]
        save(model, dst)  # refuses a model the layout cannot hold before anything is printed as dropped
        print_losses(model, args.to, dst)
    else:
        export_hf(model, dst, layout=args.hf_layout)
        what = f"transformers save_pretrained directory ({args.hf_layout} tensor names)"
    print(f"wrote {dst}: {what}")
    return 0


def print_losses(model, layout: str, dst: Path) -> None:
    """What the weights-only file will not record, and the command that reads it back as this model."""
    from deit.checkpoints import weights_only_losses

    losses = weights_only_losses(model)
    if not losses:
        print(f"dropped: nothing (the {layout} layout records weights only, and they say all of this model)")
        return
    print(f"dropped (the {layout} layout records weights only; a reader of {dst.name} infers the rest):")
    flags, fields = [], []
    for loss in losses:
        if loss.kind == "class_names":
            print(f"  class names ({len(loss.value)}): this layout has no place for them")
            continue
        what = f"preprocessing {loss.name}" if loss.kind == "preprocessing" else loss.name
        print(f"  {what} {_show(loss.value)} (read back as {_show(loss.read_back)})")
        if loss.name in RESTORING_FLAGS:
            flags.append(f"{RESTORING_FLAGS[loss.name]} {_show(loss.value)}")
        else:
            fields.append(f"{loss.name}={loss.value!r}")
    if flags:
        print(f"  to read it back as this model: deit convert {dst} OUT.safetensors {' '.join(flags)}")
    if fields:
        print(f"  in Python: deit.load_checkpoint({str(dst)!r}, {', '.join(fields)})")


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
