"""`Predictor`: images in (paths or PIL images, any mode, EXIF-rotated), class names and probabilities out.

The checkpoint's own recorded preprocessing (input size, crop ratio, interpolation, mean/std) is applied through the
data package's eval transform, so a prediction sees exactly what evaluation saw.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageOps
from torch import nn

from deit.inference.common import InferenceHead, as_model, resolve_class_names
from deit.models.contract import has_two_heads, head_names, head_outputs
from deit.models.fusion import cpu_inference_model
from deit.models.preprocessing import Preprocessing
from deit.models.vit_blocks import set_attn_impl
from deit.runtime.device import resolve_device

ImageInput = str | os.PathLike | Image.Image


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str
    probability: float

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "probability": self.probability}


@dataclass(frozen=True)
class Prediction:
    """One input's result: its top-k classes, or the reason it could not be read (then ``top_k`` is empty).
    ``heads``: every head's top-k (``cls``, ``dist``, ``avg`` of a two-head model), when asked for."""

    source: str
    top_k: list[ClassScore] = field(default_factory=list)
    error: str | None = None
    heads: dict[str, list[ClassScore]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"source": self.source, "error": self.error}
        return {"source": self.source, "predictions": [c.to_dict() for c in self.top_k]}


def eval_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The eval transform of a model's preprocessing: resize shorter side to input_size / crop_pct, centre-crop,
    to tensor, normalise (the data package's, so prediction and evaluation cannot drift apart)."""
    from deit.data.config import DataConfig
    from deit.data.transforms import build_transform

    return build_transform(DataConfig(), train=False, preprocessing=preprocessing)


def to_model_image(image: Image.Image) -> Image.Image:
    """An in-memory PIL image the way decode_image returns files: EXIF orientation applied, converted to RGB."""
    from deit.data.images import to_rgb

    return to_rgb(ImageOps.exif_transpose(image) or image)


class Predictor:
    """Classify images with a checkpoint (any supported layout) or an ``nn.Module``.

    ``head``: 'avg' (the paper's inference: mean of the class and distillation heads), 'cls' or 'dist' for a
    distilled model; ``None`` keeps the model's own setting. Class names come from the checkpoint, else the
    packaged ImageNet-1k names for a 1000-class model, else ``class_{i}``.
    """

    def __init__(
        self,
        checkpoint_or_model: str | os.PathLike | nn.Module,
        device: str | torch.device = "cpu",
        head: str | None = None,
        batch_size: int = 32,
        attn_impl: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(str(device))  # "auto": CUDA when available
        self.model = as_model(checkpoint_or_model)
        if attn_impl is not None:  # auto, sdpa or math (deit.models.attention); None keeps the model's setting
            set_attn_impl(self.model, attn_impl)
        self.net = InferenceHead(self.model, head).to(self.device).eval()
        if self.device.type == "cpu":  # the same logits, faster: oneDNN's fused linear in a ViT's blocks
            self.net = InferenceHead(cpu_inference_model(self.model), head).eval()
        self.head = head
        self.batch_size = batch_size
        prep = getattr(self.model, "preprocessing", None)
        if prep is None:
            raise ValueError("the model records no preprocessing (input size, crop, mean/std); load it from a "
                             "deit checkpoint or set model.preprocessing = deit.models.Preprocessing(...)")
        self.preprocessing = prep
        self.transform = eval_transform(prep)
        self._class_names: list[str] | None = None

    @property
    def class_names(self) -> list[str]:
        return self._names_for(getattr(self.model, "num_classes", None))

    def load_image(self, item: ImageInput) -> Image.Image:
        if isinstance(item, Image.Image):
            return to_model_image(item)
        from deit.data.images import decode_image

        path = os.fspath(item)
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a directory, not an image file")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")
        return decode_image(path)

    @property
    def head_names(self) -> tuple[str, ...]:
        """The heads :meth:`predict` reports with ``every_head``: cls, dist, avg for a two-head model."""
        return head_names(self.model) if has_two_heads(self.model) else ()

    def preprocess(self, item: ImageInput) -> torch.Tensor:
        """One image as the model's (3, S, S) normalised input tensor."""
        return self.transform(self.load_image(item))

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of the chosen head for an already preprocessed (B, 3, S, S) batch."""
        return self.net(batch.to(self.device)).float().cpu()

    @torch.inference_mode()
    def head_logits(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head (:attr:`head_names`) for an already preprocessed batch, from one forward pass."""
        outputs = head_outputs(self.model, batch.to(self.device))
        return {name: outputs[name].cpu() for name in self.head_names}

    def predict(self, inputs: ImageInput | Iterable[ImageInput], top_k: int = 5,
                every_head: bool = False) -> list[Prediction]:
        """One Prediction per input, in order. An unreadable input gets an error entry; the others still run.
        ``every_head``: also each head's top-k (``Prediction.heads``) for a two-head model."""
        if isinstance(inputs, (str, os.PathLike, Image.Image)):
            inputs = [inputs]
        items = list(inputs)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        results: list[Prediction] = []
        for start in range(0, len(items), self.batch_size):
            results.extend(self._predict_chunk(items[start : start + self.batch_size], top_k, start, every_head))
        return results

    def _predict_chunk(self, items: Sequence[ImageInput], top_k: int, offset: int,
                       every_head: bool) -> list[Prediction]:
        sources = [_source_name(item, offset + i) for i, item in enumerate(items)]
        errors: dict[int, str] = {}
        tensors: list[torch.Tensor] = []
        for i, item in enumerate(items):
            try:
                tensors.append(self.preprocess(item))
            except Exception as exc:  # a bad file must not stop the others: report it with its reason
                errors[i] = _error_message(exc)
        scores: list[list[ClassScore]] = []
        heads: dict[str, list[list[ClassScore]]] = {}
        if tensors:
            batch = torch.stack(tensors)
            scores = self._top_k(self.logits(batch), top_k)
            if every_head:
                heads = {name: self._top_k(logits, top_k) for name, logits in self.head_logits(batch).items()}
        out, ok = [], iter(range(len(scores)))
        for i, source in enumerate(sources):
            if i in errors:
                out.append(Prediction(source, error=errors[i]))
                continue
            j = next(ok)
            out.append(Prediction(source, scores[j], heads={name: top[j] for name, top in heads.items()}))
        return out

    def _top_k(self, logits: torch.Tensor, top_k: int) -> list[list[ClassScore]]:
        probs = logits.softmax(dim=-1)
        names = self._names_for(probs.shape[-1])
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[ClassScore(j, names[j], p) for j, p in zip(idxs, vals, strict=True)]
                for vals, idxs in zip(values.tolist(), indices.tolist(), strict=True)]

    def _names_for(self, n: int | None) -> list[str]:
        if self._class_names is None or len(self._class_names) != n:
            self._class_names = resolve_class_names(self.model, n)
        return self._class_names


def collect_images(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The images to predict: each file as given (an unreadable one gets its error line), each folder's image
    files (``IMG_EXTENSIONS``) found recursively, in sorted order; hidden folders are skipped."""
    from deit.data.images import IMG_EXTENSIONS, is_image_file

    found: list[str] = []
    for path in map(os.fspath, paths):
        if not os.path.isdir(path):
            found.append(path)
            continue
        inside = []
        for folder, subfolders, files in os.walk(path, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            inside += [os.path.join(folder, f) for f in sorted(files) if is_image_file(f)]
        if not inside:
            raise ValueError(f"{path} holds no image files ({', '.join(IMG_EXTENSIONS)}), in it or below")
        found += inside
    return found


def _source_name(item: ImageInput, i: int) -> str:
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {i}>"
    return os.fspath(item)


def _error_message(exc: Exception) -> str:
    msg = str(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError)) or msg.startswith("cannot read image"):
        return msg
    return f"{type(exc).__name__}: {msg}"


def format_predictions(results: Sequence[Prediction]) -> str:
    """Human-readable: per input, its top-k as 'probability  index  name', or its error."""
    lines: list[str] = []
    for r in results:
        if not r.ok:
            lines.append(f"{r.source}: ERROR: {r.error}")
            continue
        lines.append(f"{r.source}:")
        width = max(len(str(c.index)) for c in r.top_k)
        for c in r.top_k:
            lines.append(f"  {c.probability * 100:6.2f}%  {c.index:>{width}}  {c.name}")
    return "\n".join(lines)
