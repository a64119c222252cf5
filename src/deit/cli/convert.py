"""`deit convert SRC DST`: any supported checkpoint layout in, our .safetensors (or official / HF) out."""

from __future__ import annotations

import argparse
from pathlib import Path

from deit.cli.errors import CLIError
from deit.models.contract import HEAD_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (official, timm, OpenMMLab, HF transformers, ours) to our .safetensors layout",
        description="Read SRC in any supported layout (detected from its keys), optionally adapt it, and write "
        "DST. By default DST is our .safetensors layout, which records the architecture, class count, image "
        "size and preprocessing; --to official writes {'model': state_dict} .pth, --to hf a save_pretrained "
        "directory.",
    )
    p.add_argument("src", help="checkpoint file, or a transformers save_pretrained directory")
    p.add_argument("dst", help="output: a .safetensors file (default), a .pth (--to official) or a directory (--to hf)")
    p.add_argument("--num-classes", type=int, default=None, help="new class count: re-initialises both heads")
    p.add_argument("--img-size", type=int, default=None, help="new native resolution: resamples pos_embed")
    p.add_argument("--head-mode", choices=HEAD_MODES, default=None, help="what a distilled model's forward returns")
    p.add_argument("--num-heads", type=int, default=None,
                   help="attention heads, when the file cannot tell and the width is not DeiT's (192/384/768)")
    p.add_argument("--to", choices=("deit", "official", "hf"), default="deit", help="output layout (default: deit)")
    p.add_argument("--hf-layout", choices=("v5", "legacy"), default="v5",
                   help="tensor names for --to hf: transformers 5.x (v5) or <= 4.x (legacy)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.checkpoints import export_hf, load_checkpoint_with_report, save_checkpoint, save_official

    dst = Path(args.dst)
    if args.to == "deit" and dst.suffix != ".safetensors":
        raise CLIError(
            f"{dst}: our layout is a .safetensors file; name it {dst.with_suffix('.safetensors').name}, or pass "
            "--to official for a .pth or --to hf for a transformers directory"
        )
    if args.to == "official" and dst.suffix not in (".pth", ".pt"):
        raise CLIError(f"{dst}: --to official writes a pickle; name it {dst.with_suffix('.pth').name}")
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
    model, report = load_checkpoint_with_report(args.src, **overrides)
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
    elif args.to == "official":
        save_official(model, dst)
        what = "official layout {'model': state_dict}"
    else:
        export_hf(model, dst, layout=args.hf_layout)
        what = f"transformers save_pretrained directory ({args.hf_layout} tensor names)"
    print(f"wrote {dst}: {what}")
    return 0
