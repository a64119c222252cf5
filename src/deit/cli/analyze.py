"""`deit analyze tokens|attention|agreement`: the paper's section-5 analyses of a distilled checkpoint."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_OUTPUT = "runs/analysis"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="distillation made visible: token similarity, attention maps, head agreement",
        description="Analyses of a distilled DeiT (paper section 5): how similar the class and distillation tokens "
        "are through the layers, where they attend, and how often each head agrees with the teacher.",
    )
    kinds = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    kinds.required = True

    t = kinds.add_parser(
        "tokens", help="cosine similarity of the cls and dist tokens per layer, and of the two heads' weights",
        description="Per layer (the encoder input, then after each block), the mean cosine similarity between "
        "the class and distillation token embeddings over the data (paper: ~0.06 at the input, ~0.93 after the "
        "last layer), and per class the cosine similarity of head.weight and head_dist.weight. Writes "
        "DIR/tokens.png and DIR/tokens.json.",
    )
    t.add_argument("checkpoint", metavar="CK", help="a distilled checkpoint")
    _data_args(t)
    _common_args(t, output=f"output directory (default {DEFAULT_OUTPUT})")
    t.set_defaults(func=run_tokens)

    a = kinds.add_parser(
        "attention", help="attention of the cls and dist tokens to the patches, overlaid on an image (one PNG)",
        description="Last-layer attention of the class and distillation tokens to the patches, per head and "
        "averaged, and attention rollout over all layers (Abnar & Zuidema 2020), overlaid on the preprocessed "
        "image. Each map is scaled to its own range.",
    )
    a.add_argument("checkpoint", metavar="CK", help="a DeiT checkpoint (distilled: two rows, cls and dist)")
    a.add_argument("image", metavar="IMAGE", help="an image file")
    _common_args(a, output=f"PNG to write (default {DEFAULT_OUTPUT}/attention_<image name>_<digest of the image's "
                           "and the checkpoint's paths>.png: one file per image and checkpoint)")
    a.set_defaults(func=run_attention)

    g = kinds.add_parser(
        "agreement", help="how often the cls head, dist head and their average agree with the teacher and labels",
        description="Top-1 agreement of the student's class head, distillation head and their average with the "
        "teacher's predictions and with the labels (the paper's Table 4, as agreement). Writes "
        "DIR/agreement.json.",
    )
    g.add_argument("checkpoint", metavar="CK", help="the distilled student checkpoint")
    g.add_argument("--teacher", required=True, metavar="TCK", help="the teacher checkpoint")
    g.add_argument("--teacher-model", help="registered architecture of the teacher checkpoint, if needed")
    _data_args(g)
    _common_args(g, output=f"output directory (default {DEFAULT_OUTPUT})")
    g.set_defaults(func=run_agreement)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="a built-in data set (digits, synthetic), or a path: an image folder, a .csv file, or a "
                        "CIFAR archive/folder")
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images (default: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--set", dest="data_overrides", nargs="*", default=[], metavar="key=value",
                   help="data settings (e.g. img_size=32, val_fraction=0.2)")


def _common_args(p: argparse.ArgumentParser, output: str) -> None:
    p.add_argument("--model", help="registered architecture, for checkpoints that do not carry theirs")
    p.add_argument("--output", default=None, help=output)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda ...")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _eval_loader(args: argparse.Namespace, model, dataset=None):
    from deit.inference.evaluation import eval_loader

    return eval_loader(args.data, model, split=args.split, batch_size=args.batch_size, workers=args.workers,
                       overrides=args.data_overrides, dataset=dataset)


def _output_dir(args: argparse.Namespace) -> Path:
    out = Path(args.output or DEFAULT_OUTPUT)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_tokens(args: argparse.Namespace) -> int:
    from deit.checkpoints import load_model
    from deit.inference.analysis import plot_token_similarity, token_similarity, write_json
    from deit.runtime.device import resolve_device

    model = load_model(args.checkpoint, args.model)
    loader, _ = _eval_loader(args, model)
    result = token_similarity(model, loader, resolve_device(args.device), max_images=args.max_images)
    out = _output_dir(args)
    title = f"{Path(args.checkpoint).name} on {args.data} ({args.split}, {result.num_images} images)"
    plot_token_similarity(result, out / "tokens.png", title=title)
    write_json({"checkpoint": args.checkpoint, "data": args.data, "split": args.split, **result.to_dict()},
               out / "tokens.json")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.format())
        print(f"wrote {out / 'tokens.png'} and {out / 'tokens.json'}")
    return 0


def run_attention(args: argparse.Namespace) -> int:
    import torch

    from deit.checkpoints import load_model
    from deit.inference.analysis import attention_file_name, attention_maps, denormalize, plot_attention
    from deit.inference.common import resolve_class_names
    from deit.inference.predictor import Predictor

    predictor = Predictor(load_model(args.checkpoint, args.model), device=args.device)
    model = predictor.model
    x = predictor.preprocess(args.image).to(predictor.device)  # decoded and preprocessed exactly as for predict
    maps = attention_maps(model, x)
    names = resolve_class_names(model)
    with torch.inference_mode():
        heads = model.forward_heads(x[None]) if "dist" in maps.tokens else (model(x[None]),)
    guesses = [f"{tok} head: {names[int(h.argmax())]} ({float(h.softmax(-1).max()):.0%})"
               for tok, h in zip(maps.tokens, heads, strict=True)]
    output = Path(args.output or Path(DEFAULT_OUTPUT) / attention_file_name(args.image, args.checkpoint))
    pre = predictor.preprocessing
    title = f"{os.path.basename(args.image)}: " + "; ".join(guesses)
    plot_attention(maps, denormalize(x, pre.mean, pre.std), output, title=title)
    if args.json:
        print(json.dumps({"output": str(output), "tokens": maps.tokens, "grid": list(maps.grid),
                          "heads": int(maps.last_layer.shape[1]), "predictions": guesses}, indent=2))
    else:
        print("\n".join(guesses))
        print(f"wrote {output}")
    return 0


def run_agreement(args: argparse.Namespace) -> int:
    from deit.checkpoints import load_model
    from deit.inference.analysis import agreement, write_json
    from deit.runtime.device import resolve_device

    student = load_model(args.checkpoint, args.model)
    teacher = load_model(args.teacher, args.teacher_model)
    loader, dataset = _eval_loader(args, student)
    teacher_loader = None
    if getattr(teacher, "preprocessing", student.preprocessing) != student.preprocessing:
        teacher_loader, _ = _eval_loader(args, teacher, dataset)  # same images, same order, teacher's transform
    result = agreement(student, teacher, loader, teacher_loader, resolve_device(args.device),
                       max_images=args.max_images)
    out = _output_dir(args)
    write_json({"checkpoint": args.checkpoint, "teacher": args.teacher, "data": args.data, "split": args.split,
                **result.to_dict()}, out / "agreement.json")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.format())
        print(f"wrote {out / 'agreement.json'}")
    return 0
