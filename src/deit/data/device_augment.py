"""``data.device_augment``: the train recipe split between the loader workers and the training device.

The workers decode, draw every random choice of the recipe from the per-sample generator, in the same order as
the worker path (``build_transform``) draws it: the crop box, the flip, RandAugment's ops, magnitudes and signs
(or 3-Augment's op and blur radius, the colour jitter's order and factors), random erasing's boxes and fill; they
cut out what the crop reads and send its uint8 pixels with those parameters: RandomResizedCrop's box, or the
simple crop's source strip (``device_simple_crop``); the padded crop, or a nearest-neighbour resize, they run
themselves. On the device, :class:`DeviceAugment` applies the rest to the whole batch with torch ops
(``deit.data.device_steps``): the crop's resize (``device_resize``), flip, RandAugment (``device_ops``) or
3-Augment and colour jitter (``device_three_augment``), normalisation, random erasing. Mixup follows in the
training task. Since the parameters are the worker path's, a sample comes out as the worker path makes it
(bit for bit wherever the ops match PIL: see ``device_ops``), and a run stays reproducible and resumable by the
(seed, epoch, position) rule.

    worker = DeviceAugmentWorker.build(cfg, preprocessing)   # the loader's transform and collate (build_loader)
    stage = build_device_augment(cfg, preprocessing)         # the task's (TrainTask(augment=stage))
    x = stage(batch.to(device))                              # DeviceBatch -> normalised float (B, 3, H, W)

What the device needs to know to schedule the batch (the images of each RandAugment kind, the size chunks of the
resize) is worked out at collate time in the worker, so the device stage runs without host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import get_worker_info

from deit.data.config import DataConfig
from deit.data.device_resize import FILTER_SUPPORT
from deit.data.device_simple_crop import SimpleCropStep
from deit.data.device_steps import (
    DenseLayout,
    DeviceStep,
    ErasingStep,
    FlipStep,
    NormalizeStep,
    Pending,
    RandAugmentStep,
    ResizedCropStep,
)
from deit.data.device_three_augment import ColorJitterStep, ThreeAugmentStep
from deit.data.randaugment import RandAugment
from deit.data.three_augment import ColorJitter, ThreeAugment
from deit.data.transforms import (
    Compose,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    SampleKey,
    SimpleRandomCrop,
    ToTensorNormalize,
    build_transform,
)
from deit.models.preprocessing import Preprocessing

Params = dict[str, Any]
# A worker-path transform after the crop -> its device step (a DeviceStep that draws what the transform draws),
# keyed by the transform's class; the steps run in the recipe's order.
DEVICE_STEPS: dict[type, Callable[[Any], DeviceStep]] = {
    RandomHorizontalFlip: FlipStep,
    RandAugment: RandAugmentStep,
    ThreeAugment: ThreeAugmentStep,
    ColorJitter: ColorJitterStep,
    ToTensorNormalize: NormalizeStep,
    RandomErasing: ErasingStep,
}

# A train crop whose resize the device runs -> its layout step (the workers cut what the crop reads, the device
# resizes it); any other crop, or one with a filter the device lacks, the workers run whole (DenseLayout).
LAYOUT_STEPS: dict[type, Callable[[Any], ResizedCropStep | SimpleCropStep]] = {
    RandomResizedCrop: ResizedCropStep,
    SimpleRandomCrop: SimpleCropStep,
}


def layout_step(crop: Any) -> DeviceStep | None:
    """The device layout of a train crop that the device can resize (None: the workers crop)."""
    make = LAYOUT_STEPS.get(type(crop))
    step = make(crop) if make is not None else None
    return step if step is not None and step.resample in FILTER_SUPPORT else None


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


@dataclass
class DeviceBatch:
    """What a ``device_augment`` loader yields in place of images: ``images``, the bytes of the batch's images
    (uint8, 1-D: each image's HWC pixels, the crop box itself where the device resizes it), and ``params`` (per
    device step, its batch of drawn parameters; the layout step's say where each image is)."""

    images: torch.Tensor
    params: dict[str, Params]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DeviceBatch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return DeviceBatch(move(self.images), _map_tensors(self.params, move))

    def pin_memory(self) -> DeviceBatch:  # the DataLoader's pin-memory thread calls this
        return DeviceBatch(self.images.pin_memory(), _map_tensors(self.params, lambda t: t.pin_memory()))

    def __len__(self) -> int:
        return len(self.params["layout"]["order"])


class DeviceSample(NamedTuple):
    image: np.ndarray  # uint8 (H, W, 3)
    params: dict[str, Params]


def _pack(images: list[np.ndarray]) -> torch.Tensor:
    """The images' bytes back to back; in a loader worker, straight into shared memory (as default_collate
    stacks) so that the batch crosses to the main process without another copy."""
    total = sum(a.size for a in images)
    if get_worker_info() is not None:
        out = torch.empty(0, dtype=torch.uint8)
        out = out.new(out._typed_storage()._new_shared(total, device="cpu")).resize_(total)
    else:
        out = torch.empty(total, dtype=torch.uint8)
    np.concatenate([a.reshape(-1) for a in images], out=out.numpy())
    return out


def split_transform(transform: Compose) -> tuple[Compose, list[DeviceStep]]:
    """The worker path's train transform as (the part the workers run: the crop, unless the device can resize it;
    the device steps of the rest, the layout first)."""
    ts = transform.transforms
    layout = layout_step(ts[0]) if ts else None
    head = [] if layout is not None else ts[:1]
    steps = [layout or DenseLayout()]
    for t in ts[1:] if ts else ():
        make = DEVICE_STEPS.get(type(t))
        if make is None:
            raise ValueError(f"data.device_augment: the train transform {type(t).__name__} has no device version "
                             "yet; set data.device_augment=false to run the whole recipe in the loader workers")
        steps.append(make(t))
    if not any(isinstance(s, NormalizeStep) for s in steps):
        raise ValueError("data.device_augment: the train transform has no normalisation to run on the device")
    return Compose(head), steps


# --------------------------------------------------------------------------------------- the two halves
class DeviceAugmentWorker:
    """The loader workers' half: ``(PIL image, rng) -> DeviceSample``; ``collate`` makes the ``DeviceBatch``."""

    def __init__(self, head: Compose, steps: list[DeviceStep]):
        self.head, self.steps = head, steps

    @classmethod
    def build(cls, cfg: DataConfig, preprocessing: Preprocessing) -> DeviceAugmentWorker:
        return cls(*split_transform(build_transform(cfg, True, preprocessing)))

    def __call__(self, img: Image.Image, rng: np.random.Generator, sample: SampleKey | None = None) -> DeviceSample:
        img = self.head(img, rng, sample)
        pending = Pending(img, (3, img.height, img.width))
        params = {s.name: s.draw(pending, rng) for s in self.steps}
        return DeviceSample(np.asarray(pending.image), params)

    def collate(self, samples: list[DeviceSample]) -> DeviceBatch:
        params = {s.name: s.collate([p.params[s.name] for p in samples]) for s in self.steps}
        return DeviceBatch(_pack([samples[i].image for i in params["layout"]["order"]]), params)


class DeviceAugment:
    """The device's half: ``DeviceBatch`` (on the device) -> the normalised, augmented float32 batch."""

    def __init__(self, steps: list[DeviceStep]):
        self.steps = steps

    def __call__(self, batch: DeviceBatch) -> torch.Tensor:
        x = batch.images
        for step in self.steps:  # the layout step makes a new tensor: the caller's batch stays as loaded
            x = step.apply(x, batch.params[step.name])
        return x

    def __repr__(self) -> str:
        return f"DeviceAugment({', '.join(type(s).__name__ for s in self.steps)})"


def build_device_augment(cfg: DataConfig, preprocessing: Preprocessing) -> DeviceAugment | None:
    """The device stage of ``cfg``'s train recipe, or None without ``data.device_augment``."""
    if not cfg.device_augment:
        return None
    return DeviceAugment(split_transform(build_transform(cfg, True, preprocessing))[1])


__all__ = [
    "DeviceAugment",
    "DeviceAugmentWorker",
    "DeviceBatch",
    "DeviceSample",
    "build_device_augment",
    "layout_step",
    "split_transform",
]
