"""The steps of the train recipe under ``data.device_augment``, each split in two: ``draw`` in a loader worker (one
sample: what the worker path would draw from the sample's generator, in the same order; the layout step also cuts
the image), ``collate`` there (a batch's draws: fixed-shape tensors, host ints, groups), ``apply`` on the
training device (the batch, with torch ops). See ``deit.data.device_augment`` for the whole.

The first step lays the batch out: ``ResizedCropStep`` (the workers cut RandomResizedCrop's box, the device
resizes it: ``deit.data.device_resize``), ``SimpleCropStep`` (the simple crop's strip, resized alike:
``deit.data.device_simple_crop``) or ``DenseLayout`` (the workers ran the crop themselves). Then flip,
RandAugment (``deit.data.device_ops``), normalisation and erasing; 3-Augment and the colour jitter are in
``deit.data.device_three_augment``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from deit.data.device_ops import TORCH_OPS, affine
from deit.data.device_resize import resize, vertical_first
from deit.data.randaugment import AFFINE_KINDS, PIL_INTERPOLATION, RandAugment, affine_matrix, op_kind
from deit.data.transforms import RandomErasing, RandomHorizontalFlip, RandomResizedCrop, ToTensorNormalize

Params = dict[str, Any]
INTERPOLATION_NAMES = {v: k for k, v in PIL_INTERPOLATION.items()}
# Geometric kinds that move pixels along one axis only (the other bicubic fraction is exactly 0).
_ALONG = {"shear_x": "x", "translate_x": "x", "shear_y": "y", "translate_y": "y", "rotate": "xy"}
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Pixels (images x padded height x padded width) resized in one float64 product: ~100 MB of input
CHUNK_PIXELS = 1 << 22
# A chunk of a batch resized together: (images start:end in packed order, their bytes lo:hi, the height and width
# they are padded to, vertical pass first). Plain ints: a DeviceBatch moves its params' tensors, not these.
Chunk = tuple[int, int, int, int, int, int, bool]


@dataclass
class Pending:
    """A sample in the worker: its image so far (PIL, or the uint8 HWC array it is sent as) and the (C, H, W) it
    has on the device once laid out."""

    image: Image.Image | np.ndarray
    shape: tuple[int, int, int]


class DeviceStep(abc.ABC):
    """One transform of the recipe, split between the worker (``draw``, ``collate``) and the device (``apply``)."""

    name: str

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        return {}

    def collate(self, draws: list[Params]) -> Params:
        return {}

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """This step on the device, for the whole batch, with the parameters ``collate`` gathered."""


# ----------------------------------------------------------------------------------------------- layouts
class DenseLayout(DeviceStep):
    """Images the workers cropped to one size: the batch is their HWC bytes, back to back."""

    name = "layout"

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        pending.image = np.asarray(pending.image)
        return {"shape": pending.image.shape}

    def collate(self, draws: list[Params]) -> Params:
        return {"order": list(range(len(draws))), "shape": draws[0]["shape"]}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x.view(-1, *params["shape"]).permute(0, 3, 1, 2).contiguous()


class ResizedCropStep(DeviceStep):
    """RandomResizedCrop: the worker draws the box (as the worker path does) and sends its pixels; the device
    resizes each box to ``size`` as PIL does. The batch goes in chunks of similar sizes (ordered so at collate)."""

    name = "layout"

    def __init__(self, crop: RandomResizedCrop):
        self.crop, self.size = crop, crop.size
        self.resample = INTERPOLATION_NAMES[crop.resample]

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        img = pending.image
        top, left, h, w = self.crop.get_params(img.width, img.height, rng)
        pending.image = np.asarray(img.crop((left, top, left + w, top + h)))
        pending.shape = (3, self.size, self.size)
        return {"hw": (h, w)}

    def collate(self, draws: list[Params]) -> Params:
        hw = [d["hw"] for d in draws]
        order, chunks = size_chunks(hw, [vertical_first(h, w, self.size, self.size) for h, w in hw])
        return {"order": order, "index": torch.tensor(order), "hw": torch.tensor([hw[i] for i in order]),
                "chunks": chunks}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        n = len(params["order"])
        out = torch.empty(n, 3, self.size, self.size, dtype=torch.uint8, device=x.device)
        for start, end, lo, hi, height, width, vertical in params["chunks"]:
            hw = params["hw"][start:end]
            padded = unpack(x[lo:hi], hw, height, width)
            images = resize(padded, hw[:, 0], hw[:, 1], self.size, self.resample, vertical)
            out.index_copy_(0, params["index"][start:end], images)
        return out


def size_chunks(hw: list[tuple[int, int]], first: list[bool]) -> tuple[list[int], list[Chunk]]:
    """A batch of images of sizes ``hw``, resized vertical pass first where ``first`` says, in chunks to resize
    together: (the order the images are packed in, by pass order then largest first; the chunks)."""
    order = sorted(range(len(hw)), key=lambda i: (first[i], -hw[i][0] * hw[i][1]))
    chunks, start, offset, size, top, wide = [], 0, 0, 0, 0, 0
    for end, i in enumerate(order):
        h, w = hw[i]
        if end > start and (first[i] != first[order[start]] or
                            (end - start + 1) * max(top, h) * max(wide, w) > CHUNK_PIXELS):
            chunks.append((start, end, offset, offset + size, top, wide, first[order[start]]))
            start, offset, size, top, wide = end, offset + size, 0, 0, 0
        size += 3 * h * w
        top, wide = max(top, h), max(wide, w)
    chunks.append((start, len(order), offset, offset + size, top, wide, first[order[start]]))
    return order, chunks


def unpack(x: torch.Tensor, hw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A chunk's images from their packed HWC bytes ``x``: uint8 (n, 3, height, width), image i in its top-left
    ``hw[i]`` (zeros past it)."""
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = (rows < hw[:, :1, None]) & (cols < hw[:, 1:, None])
    padded = torch.zeros(hw.shape[0], height, width, 3, dtype=torch.uint8, device=x.device)
    # row-major over (image, row, column, channel): each image's HWC bytes, in the order packed
    padded.masked_scatter_(inside.unsqueeze(-1).expand_as(padded), x)
    return padded.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------- per-image steps
class FlipStep(DeviceStep):
    name = "flip"

    def __init__(self, flip: RandomHorizontalFlip):
        self.p = flip.p

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        return {"flip": rng.random() < self.p}

    def collate(self, draws: list[Params]) -> Params:
        return {"flip": torch.tensor([bool(d["flip"]) for d in draws])}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.where(params["flip"].view(-1, 1, 1, 1), x.flip(-1), x)


class RandAugmentStep(DeviceStep):
    """RandAugment: the worker draws (op, argument, affine matrix) per op slot; the device applies each slot's ops
    kind by kind (uint8 in, uint8 out), the images of a kind gathered at collate time."""

    name = "rand_augment"

    def __init__(self, ra: RandAugment):
        self.ra = ra
        self.kinds = [op_kind(name) for name in ra.spec.op_names]
        self.index = {name: i for i, name in enumerate(ra.spec.op_names)}
        self.resample = INTERPOLATION_NAMES[ra.resample]

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        _, height, width = pending.shape
        ops = []
        for name, _, arg in self.ra.draw(rng):
            op = self.index[name]
            kind = self.kinds[op]
            ops.append((op, arg, affine_matrix(kind, arg, width, height) if kind in AFFINE_KINDS else _IDENTITY))
        return {"ops": ops}

    def collate(self, draws: list[Params]) -> Params:
        slots = self.ra.spec.num_ops
        args, matrices = np.zeros((len(draws), slots)), np.tile(_IDENTITY, (len(draws), slots, 1))
        members: list[dict[str, list[int]]] = [{} for _ in range(slots)]
        for i, d in enumerate(draws):
            for slot, (op, arg, matrix) in enumerate(d["ops"]):
                args[i, slot], matrices[i, slot] = arg, matrix
                members[slot].setdefault(self.kinds[op], []).append(i)
        groups = [(slot, kind, torch.tensor(idx)) for slot in range(slots) for kind, idx in sorted(
            members[slot].items())]
        return {"args": torch.from_numpy(args), "matrices": torch.from_numpy(matrices), "groups": groups}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        fill = torch.tensor(self.ra.fill, dtype=torch.uint8, device=x.device)
        for slot, kind, idx in params["groups"]:
            images = x.index_select(0, idx)
            if kind in AFFINE_KINDS:
                out = affine(images, params["matrices"][idx, slot], fill, self.resample, _ALONG[kind])
            else:
                out = TORCH_OPS[kind](images, params["args"][idx, slot])
            x.index_copy_(0, idx, out)
        return x


class NormalizeStep(DeviceStep):
    """uint8 -> float32 in [0, 1] -> (x - mean) / std, in the worker path's order of operations."""

    name = "normalize"

    def __init__(self, normalize: ToTensorNormalize):
        self.mean, self.std = normalize.mean, normalize.std

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        # Divisors are tensors on the device: CUDA divides by a CPU scalar through its reciprocal.
        on = dict(device=x.device, dtype=torch.float32)
        return (x.to(torch.float32).div_(torch.tensor(255.0, **on)).sub_(self.mean.to(**on))
                .div_(self.std.to(**on)))


class ErasingStep(DeviceStep):
    """Random erasing: the worker draws the boxes (top, left, h, w; h = 0 for none) and their fill: per-pixel
    noise sent flat (box by box over the batch), a colour per box, or nothing for zeros; the device paints them
    box by box, as the worker path does."""

    name = "erasing"

    def __init__(self, erasing: RandomErasing):
        self.erasing = erasing

    def draw(self, pending: Pending, rng: np.random.Generator) -> Params:
        return {"boxes": [(top, left, h, w, fill.numpy() if self.erasing.mode == "pixel" else fill[:, 0, 0].tolist())
                          for top, left, h, w, fill in self.erasing.draw(pending.shape, rng)]}

    def collate(self, draws: list[Params]) -> Params:
        count, chan = self.erasing.max_count, 3
        boxes = np.zeros((len(draws), count, 4), dtype=np.int64)
        colours = np.zeros((len(draws), count, chan), dtype=np.float32)
        noise: list[list[np.ndarray]] = [[] for _ in range(count)]
        for i, d in enumerate(draws):
            for k, (top, left, h, w, fill) in enumerate(d["boxes"]):
                boxes[i, k] = top, left, h, w
                if self.erasing.mode == "pixel":
                    noise[k].append(fill.reshape(-1))
                elif self.erasing.mode == "rand":
                    colours[i, k] = fill
        flat = [torch.from_numpy(np.concatenate(n) if n else np.zeros(0, np.float32)) for n in noise]
        return {"boxes": torch.from_numpy(boxes), "colours": torch.from_numpy(colours), "noise": flat}

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        b, c, h, w = x.shape
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        for k in range(self.erasing.max_count):
            top, left, bh, bw = (v.view(b, 1, 1) for v in params["boxes"][:, k].unbind(1))
            mask = ((rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)).unsqueeze(1)
            mask = mask.expand(b, c, h, w)
            if self.erasing.mode == "pixel":
                x = x.masked_scatter(mask, params["noise"][k])  # row-major: the worker's (C, h, w) blocks
            elif self.erasing.mode == "rand":
                x = torch.where(mask, params["colours"][:, k].view(b, c, 1, 1), x)
            else:
                x = x.masked_fill(mask, 0.0)
        return x


__all__ = [
    "DenseLayout",
    "DeviceStep",
    "ErasingStep",
    "FlipStep",
    "NormalizeStep",
    "Pending",
    "RandAugmentStep",
    "ResizedCropStep",
    "size_chunks",
    "unpack",
]
