"""`deit export CK --format onnx|torchscript -o OUT`: one-output inference graph, checked against PyTorch."""

from __future__ import annotations

import argparse
import json
import sys

from deit.models.contract import HEAD_MODES


def register(sub: argparse._SubParsersAction) -> None:
    from deit.inference.export import DEFAULT_OPSET, FORMATS, PARITY_TOLERANCE

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript and check the export against PyTorch",
        description="Exports the chosen head as a graph with one input (the normalised image batch) and one "
        "output (logits), reloads it with onnxruntime / torch.jit.load, runs it and the PyTorch model on the "
        f"same random batch and reports the max abs difference; exit code 1 if it exceeds {PARITY_TOLERANCE:g}. "
        "OUT.json records the input name and shape, preprocessing, class names and the measured difference.",
    )
    p.add_argument("checkpoint", metavar="CK", help="checkpoint file or directory (any layout deit reads)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="default onnx")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    p.add_argument("--model", help="registered architecture, for checkpoints that do not carry theirs")
    p.add_argument("--head", choices=HEAD_MODES, default=None,
                   help="distilled models: which head the graph outputs (default: the checkpoint's, avg)")
    p.add_argument("--img-size", type=int, default=None,
                   help="input resolution of the graph (default: the checkpoint's; pos_embed is resampled)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="any batch size (checked at two sizes); default: a fixed batch of --batch-size")
    p.add_argument("--batch-size", type=int, default=2, help="batch of the parity check / static graph (2)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 14 (default {DEFAULT_OPSET})")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deit.checkpoints import load_model
    from deit.inference.export import ExportError, export_model

    model = load_model(args.checkpoint, args.model)
    try:
        result = export_model(model, args.output, args.format, head=args.head, img_size=args.img_size,
                              dynamic_batch=args.dynamic_batch, opset=args.opset, batch_size=args.batch_size)
    except ExportError as exc:  # the parity check failed, or no exporter / runtime
        print(f"deit export: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0
