"""`deit info`: sizes of a model (exact parameters, GMACs in both published conventions, tokens)."""

from __future__ import annotations

import argparse
import json

import torch

from deit.models import build_architecture, get_entry, list_models, measure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, GMACs (both conventions) and tokens of a model")
    p.add_argument("name", nargs="?", help="model name or alias (see --list)")
    p.add_argument("--list", action="store_true", help="all named models")
    p.add_argument("--img-size", type=int, default=None, help="input resolution (default: the model's)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the head (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON (an object, or a list with --list)")
    p.set_defaults(func=run)


def model_info(name: str, img_size: int | None = None, num_classes: int | None = None) -> dict:
    entry = get_entry(name)
    # A meta-device model: exact shapes and counts, no memory, instant even for DeiT-B/384.
    with torch.device("meta"):
        model = build_architecture(entry.name, img_size=img_size, num_classes=num_classes)
    size = model.preprocessing.input_size
    c = measure(model, size)
    cfg = model.config
    row = {
        "name": entry.name,
        "family": entry.family,
        "params": c.params,
        "params_m": round(c.params / 1e6, 2),
        "gmacs_linear": round(c.gmacs_linear, 2),
        "gmacs_total": round(c.gmacs_total, 2),
        "img_size": size,
        "num_classes": cfg.num_classes,
        "num_tokens": getattr(cfg, "num_tokens", None),
        "aliases": list(entry.aliases),
        "pretrained_tags": list(entry.tags),  # name.tag picks a release: deit3_small_patch16_224.fb_in22k_ft_in1k
    }
    return row


_COLUMNS = (("name", 0), ("params", 14), ("params_m", 9), ("gmacs_linear", 13), ("gmacs_total", 12),
            ("num_tokens", 11), ("img_size", 9))


def format_table(rows: list[dict]) -> str:
    widths = {c: w or 2 + max(len(c), *(len(r[c]) for r in rows)) for c, w in _COLUMNS}  # name: the longest's
    head = "".join(f"{c:<{widths[c]}}" for c, _ in _COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for c, _ in _COLUMNS:
            v = r[c]
            if c == "params":
                v = f"{v:,}"
            elif isinstance(v, float):
                v = f"{v:.2f}"
            cells.append(f"{'-' if v is None else v!s:<{widths[c]}}")
        lines.append("".join(cells))
    lines.append("gmacs_linear: Linear+Conv MACs + GELU (OpenMMLab 'Flops(G)'); "
                 "gmacs_total: + attention matmuls + LayerNorm (timm/fvcore)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        rows = [model_info(n, args.img_size, args.num_classes) for n in list_models()]
        print(json.dumps(rows, indent=2) if args.json else format_table(rows))
        return 0
    if not args.name:
        raise ValueError("give a model name, or --list for all of them")
    row = model_info(args.name, args.img_size, args.num_classes)
    print(json.dumps(row, indent=2) if args.json else format_table([row]))
    return 0
