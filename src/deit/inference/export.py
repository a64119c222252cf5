"""Export the inference graph (one head, one output) to ONNX or TorchScript, then check the export against PyTorch.

Exporters, as chosen for torch 2.13 (the version this project pins):

- ONNX: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). It converts
  ``F.scaled_dot_product_attention`` from opset 14 on (we default to 17) and needs only the ``onnx`` package. The
  torch.export-based exporter (``dynamo=True``, torch's default since 2.9) needs ``onnxscript``, which is not a
  dependency; it is used only where the TorchScript-based one is missing from the installed torch.
- TorchScript: ``torch.jit.trace`` of the wrapped model. Tracing keeps the batch dimension symbolic, so the file
  accepts any batch size; the image size is fixed at export time (``--img-size``).

Both ``torch.jit.trace`` and the TorchScript-based ONNX exporter are deprecated in torch 2.13 and warn about it,
and tracing warns about the model's input-shape checks (constant for a fixed image size); those known warnings are
silenced here. The exported graph takes the normalised (B, 3, S, S) float tensor; the preprocessing to produce it
is written next to the file as ``OUT.json`` together with the class names.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from deit.inference.common import InferenceHead, model_input_size, resolve_class_names
from deit.models.contract import has_two_heads, head_mode_of

FORMATS: tuple[str, ...] = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention has an ONNX conversion from opset 14
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(RuntimeError):
    """The export could not be written or checked (exporter or runtime missing or failing)."""


class ExportParityError(ExportError):
    """The exported graph does not reproduce the PyTorch model within the tolerance."""


@dataclass
class ExportResult:
    path: str
    format: str
    head: str
    img_size: int
    dynamic_batch: bool
    batch_size: int
    opset: int | None
    tolerance: float
    max_abs_diff: dict[int, float] = field(default_factory=dict)  # per checked batch size

    @property
    def worst_diff(self) -> float:
        return max(self.max_abs_diff.values())

    @property
    def passed(self) -> bool:
        return self.worst_diff <= self.tolerance

    def to_dict(self) -> dict:
        d = asdict(self)
        d["max_abs_diff"] = {str(k): v for k, v in self.max_abs_diff.items()}
        d["worst_diff"], d["passed"] = self.worst_diff, self.passed
        return d

    def summary(self) -> str:
        diffs = ", ".join(f"batch {b}: {d:.3e}" for b, d in self.max_abs_diff.items())
        verdict = "OK" if self.passed else "FAILED"
        return (f"exported {self.format} ({self.head} head, {self.img_size}px, "
                f"{'dynamic' if self.dynamic_batch else 'static'} batch) to {self.path}\n"
                f"parity vs PyTorch, max abs diff of logits: {diffs} (tolerance {self.tolerance:g}): {verdict}")


def prepare_for_export(model: nn.Module, head: str | None, img_size: int | None) -> tuple[nn.Module, int]:
    """The chosen head as a one-output module at the requested resolution (a copy when the resolution changes)."""
    native = model_input_size(model)
    size = native if img_size is None else int(img_size)
    if size != native and hasattr(model, "set_img_size"):
        model = copy.deepcopy(model)
        model.set_img_size(size)  # pos_embed resampled bicubically on the patch grid, prefix tokens kept
    return InferenceHead(model.eval(), head).eval(), size


def _head_name(model: nn.Module, head: str | None) -> str:
    if not has_two_heads(model):
        return "cls"  # the only head
    return head or head_mode_of(model)


def _in_chans(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "in_chans", 3))


def _parity_input(batch: int, size: int, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randn(batch, channels, size, size, generator=g)


def _export_onnx(net: nn.Module, example: torch.Tensor, path: str, dynamic_batch: bool, opset: int) -> None:
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation of the TorchScript-based exporter; tracer shape-check notes
        try:
            torch.onnx.export(net, (example,), path, dynamo=False, dynamic_axes=dynamic_axes, **kwargs)
            return
        except Exception as exc:
            legacy_error = exc
        try:  # a torch whose TorchScript-based exporter is gone or fails: the torch.export-based one, if installed
            import onnxscript  # noqa: F401
        except ImportError:
            raise ExportError(f"ONNX export failed: {type(legacy_error).__name__}: {legacy_error}") from legacy_error
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
        torch.onnx.export(net, (example,), path, dynamo=True, dynamic_shapes=dynamic_shapes, **kwargs)


def _export_torchscript(net: nn.Module, example: torch.Tensor, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation; TracerWarnings of the constant shape checks
        traced = torch.jit.trace(net, example, check_trace=False)
    traced.save(path)


def run_exported(path: str, fmt: str, x: torch.Tensor) -> np.ndarray:
    """Load an exported file the way a user would (onnxruntime / torch.jit.load) and run it on ``x``."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ExportError("checking an ONNX export needs onnxruntime: pip install 'deit[export]'") from exc
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(path, map_location="cpu")
    with torch.inference_mode():
        return loaded(x).numpy()


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str = "onnx",
    *,
    head: str | None = None,
    img_size: int | None = None,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    batch_size: int = 2,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export ``model``'s chosen head to ``path`` and check the export against PyTorch on random batches.

    The model is exported from the CPU in float32 (it is moved there). The check runs on ``batch_size`` inputs
    (and on ``batch_size + 3`` too with ``dynamic_batch``); raises ExportParityError (the file stays, named in the
    message) when the max abs difference of the logits exceeds ``tolerance``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if fmt == "onnx" and opset < MIN_OPSET:
        raise ValueError(f"opset {opset} cannot express scaled_dot_product_attention; use --opset {MIN_OPSET} or "
                         f"higher (default {DEFAULT_OPSET})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)

    model = model.cpu().float().eval()
    net, size = prepare_for_export(model, head, img_size)
    channels = _in_chans(model)
    example = _parity_input(batch_size, size, channels)
    with torch.inference_mode():
        net(example)  # fail here, in PyTorch, with the model's own message if the size does not fit
    if fmt == "onnx":
        _export_onnx(net, example, path, dynamic_batch, opset)
    else:
        _export_torchscript(net, example, path)

    result = ExportResult(
        path=path, format=fmt, head=_head_name(model, head), img_size=size,
        dynamic_batch=dynamic_batch, batch_size=batch_size, opset=opset if fmt == "onnx" else None, tolerance=tolerance,
    )
    for b in (batch_size, batch_size + 3) if dynamic_batch else (batch_size,):
        x = _parity_input(b, size, channels)
        with torch.inference_mode():
            expected = net(x).numpy()
        got = run_exported(path, fmt, x)
        if got.shape != expected.shape:
            raise ExportParityError(f"{path}: the export returned shape {got.shape} for batch {b}, "
                                    f"PyTorch {expected.shape}")
        result.max_abs_diff[b] = float(np.abs(got.astype(np.float64) - expected).max())

    _write_sidecar(model, result)
    if not result.passed:
        raise ExportParityError(
            f"{path}: the {fmt} export differs from the PyTorch model by {result.worst_diff:.3e} "
            f"(max abs diff of logits), above the tolerance {tolerance:g}; do not use this file"
        )
    return result


def _write_sidecar(model: nn.Module, result: ExportResult) -> None:
    """OUT.json: what a user of the bare graph needs: input name and shape, preprocessing, class names, parity."""
    prep = getattr(model, "preprocessing", None)
    try:
        names = resolve_class_names(model)
    except ValueError:
        names = None
    meta = {
        **result.to_dict(),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": ["batch" if result.dynamic_batch else result.batch_size, _in_chans(model), result.img_size,
                        result.img_size],
        "preprocessing": prep.to_dict() if prep is not None else None,
        "class_names": names,
    }
    if prep is not None:
        meta["preprocessing"]["input_size"] = result.img_size
    with open(result.path + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
