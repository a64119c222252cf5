"""Per-image transforms of the DeiT recipe on PIL images and tensors, without torchvision.

Every random transform is called as ``t(x, rng)`` with a ``numpy.random.Generator``: the loader seeds one per
sample from (seed, epoch, position in the epoch's stream), so augmentation never depends on worker scheduling.

Train: RandomResizedCrop (bicubic; or, for small images, a padded random crop; or DeiT III's simple random crop)
-> horizontal flip -> RandAugment (or, without it, colour jitter) -> to tensor -> normalise -> RandomErasing.
Train with ``three_augment`` (DeiT III; the official ``--ThreeAugment`` replaces the whole train transform): crop ->
flip -> one of grayscale / solarize / blur (``deit.data.three_augment``) -> colour jitter -> to tensor -> normalise.
Eval:  resize the shorter side to ``input_size / crop_pct`` -> centre crop ``input_size`` -> to tensor -> normalise.
Sizes, crop offsets and rounding follow torchvision/timm so a model sees the same pixels as under those tools.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from deit.data.config import DataConfig
from deit.data.randaugment import PIL_INTERPOLATION, RandAugment
from deit.data.three_augment import ColorJitter, ThreeAugment
from deit.models.preprocessing import Preprocessing


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with log-uniform aspect ratio in ``ratio``, resize to ``size``.

    Ten tries, then a centre crop clamped to the ratio range (torchvision's fallback).
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), interpolation: str = "bicubic"):
        self.size = int(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.resample = PIL_INTERPOLATION[interpolation]

    def get_params(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        top, left, h, w = self.get_params(img.width, img.height, rng)
        return img.crop((left, top, left + w, top + h)).resize((self.size, self.size), self.resample)


def reflect_pad(img: Image.Image, padding: int) -> np.ndarray:
    """The image as an HWC array with ``padding`` pixels added on every side by reflection (torchvision's
    ``padding_mode="reflect"``: the edge pixel is not repeated)."""
    a = np.asarray(img)
    return np.pad(a, ((padding, padding), (padding, padding), (0, 0)), mode="reflect") if padding else a


def crop_array(a: np.ndarray, top: int, left: int, size: int) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a[top:top + size, left:left + size]))


class PaddedRandomCrop:
    """The small-image crop (CIFAR's standard): resize to ``size`` if needed, pad ``padding`` pixels on every side
    by reflection, cut ``size`` x ``size`` at a uniformly random offset. Every pixel of the crop is a real one."""

    def __init__(self, size: int, padding: int = 4, interpolation: str = "bilinear"):
        self.size, self.padding = int(size), int(padding)
        self.resample = PIL_INTERPOLATION[interpolation]

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), self.resample)
        if not self.padding:
            return img
        top, left = (int(v) for v in rng.integers(0, 2 * self.padding + 1, size=2))
        return crop_array(reflect_pad(img, self.padding), top, left, self.size)


class SimpleRandomCrop:
    """DeiT III's simple random crop (official ``--src``): resize the shorter side to ``size`` keeping the aspect
    ratio (``Resize(size)``), pad ``padding`` pixels by reflection, cut ``size`` x ``size`` at a uniformly random
    offset anywhere in the padded image (``RandomCrop(size, padding, padding_mode="reflect")``)."""

    def __init__(self, size: int, padding: int = 4, interpolation: str = "bicubic"):
        self.size, self.padding = int(size), int(padding)
        self.resize = ResizeShorter(size, interpolation)

    def get_params(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int]:
        """(top, left) of the crop in the padded image of the resized ``width`` x ``height`` one."""
        top = int(rng.integers(0, height + 2 * self.padding - self.size + 1))
        return top, int(rng.integers(0, width + 2 * self.padding - self.size + 1))

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        img = self.resize(img)
        top, left = self.get_params(img.width, img.height, rng)
        return crop_array(reflect_pad(img, self.padding), top, left, self.size)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < self.p else img


class SampleKey(NamedTuple):
    """Which sample a transform is making: the run's seed, the epoch and the image's index in its data set."""

    seed: int
    epoch: int
    index: int


class AlternatingHorizontalFlip:
    """airbench's alternating flip: image ``index`` is flipped in epoch 0 with probability ``p`` (drawn once from
    the seed and the index), and in epoch ``e`` iff that first choice xor ``e`` is odd. It reads the sample's
    identity (``wants_sample``), not the per-sample generator."""

    wants_sample = True

    def __init__(self, p: float = 0.5):
        self.p = p

    def flipped(self, key: SampleKey) -> bool:
        first = np.random.default_rng([key.seed, _FLIP_STREAM, key.index]).random() < self.p
        return bool(first) != (key.epoch % 2 == 1)

    def __call__(self, img: Image.Image, rng: np.random.Generator, sample: SampleKey) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flipped(sample) else img


_FLIP_STREAM = 0x666C6970  # "flip": the first-epoch choices are a stream of their own, apart from the crops'


class ToTensorNormalize:
    """uint8 HWC RGB -> float CHW in [0, 1] -> (x - mean) / std, in torchvision's order of operations."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        return x.to(torch.float32).div_(255).sub_(self.mean).div_(self.std)


class RandomErasing:
    """timm's RandomErasing on a normalised CHW tensor: with probability ``p`` erase ``count`` boxes.

    Each box: area fraction uniform in [min_area, max_area] (divided by the count), log-uniform aspect ratio in
    [min_aspect, 1/min_aspect]; up to 10 tries to fit. mode "pixel": per-pixel N(0, 1) noise; "rand": one N(0, 1)
    colour per channel; "const": zeros (the normalised mean).
    """

    def __init__(self, p: float = 0.25, mode: str = "pixel", min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_aspect: float | None = None, min_count: int = 1, max_count: int = 1):
        self.p = p
        self.mode = mode
        self.min_area, self.max_area = min_area, max_area
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.min_count, self.max_count = min_count, max(min_count, max_count)

    def _fill(self, shape: tuple[int, int, int], rng: np.random.Generator) -> torch.Tensor:
        if self.mode == "pixel":
            return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
        if self.mode == "rand":
            return torch.from_numpy(rng.standard_normal((shape[0], 1, 1), dtype=np.float32)).expand(shape)
        return torch.zeros(shape)

    def draw(self, shape: tuple[int, int, int], rng: np.random.Generator
             ) -> list[tuple[int, int, int, int, torch.Tensor]]:
        """The boxes erased in a (C, H, W) image, ``(top, left, h, w, fill)`` each, in order (a later box paints
        over an earlier one), drawn from ``rng`` as erasing draws them."""
        if rng.random() >= self.p:
            return []
        chan, img_h, img_w = shape
        area = img_h * img_w
        count = self.min_count if self.min_count == self.max_count else int(
            rng.integers(self.min_count, self.max_count + 1))
        boxes = []
        for _ in range(count):
            for _attempt in range(10):
                target_area = rng.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(rng.uniform(*self.log_aspect))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if w < img_w and h < img_h:
                    top = int(rng.integers(0, img_h - h + 1))
                    left = int(rng.integers(0, img_w - w + 1))
                    boxes.append((top, left, h, w, self._fill((chan, h, w), rng)))
                    break
        return boxes

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        for top, left, h, w, fill in self.draw(tuple(x.shape), rng):
            x[:, top:top + h, left:left + w] = fill
        return x


class ResizeShorter:
    """Resize so the shorter side is ``size`` (longer side truncated like torchvision's Resize(int))."""

    def __init__(self, size: int, interpolation: str = "bicubic"):
        self.size = int(size)
        self.resample = PIL_INTERPOLATION[interpolation]

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a ``width`` x ``height`` image is resized to."""
        if width <= height:
            return self.size, int(self.size * height / width)
        return int(self.size * width / height), self.size

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        size = self.output_size(*img.size)
        return img if size == img.size else img.resize(size, self.resample)


class CenterCrop:
    """Centre crop to ``size`` with torchvision's offsets (round half to even); pads with black if smaller."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img: Image.Image, rng=None) -> Image.Image:
        w, h = img.size
        s = self.size
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return img.crop((left, top, left + s, top + s))  # PIL pads outside the image with zeros


class Compose:
    """The transforms in turn; those that declare ``wants_sample`` also get the sample's ``SampleKey``."""

    def __init__(self, transforms: list[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x: Image.Image, rng: np.random.Generator | None = None, sample: SampleKey | None = None
                 ) -> torch.Tensor:
        for t in self.transforms:
            if getattr(t, "wants_sample", False):
                if sample is None:
                    raise ValueError(f"{type(t).__name__} needs the sample's identity: call with sample=SampleKey")
                x = t(x, rng, sample)
            else:
                x = t(x, rng)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n  {type(t).__name__}" for t in self.transforms)
        return f"Compose({inner}\n)"


def mean_fill(mean: Sequence[float]) -> tuple[int, ...]:
    """The dataset mean as 8-bit RGB: the fill colour of RandAugment's geometric ops (timm's img_mean)."""
    return tuple(min(255, round(255 * m)) for m in mean)


def train_crop(cfg: DataConfig, size: int) -> Callable:
    """The crop ``cfg.train_crop`` names, to ``size`` x ``size``."""
    if cfg.train_crop == "padded":
        return PaddedRandomCrop(size, cfg.crop_padding, cfg.train_interpolation)
    if cfg.train_crop == "simple":
        return SimpleRandomCrop(size, cfg.crop_padding, cfg.train_interpolation)
    return RandomResizedCrop(size, cfg.scale, cfg.ratio, cfg.train_interpolation)


def build_transform(cfg: DataConfig, train: bool, preprocessing: Preprocessing) -> Compose:
    """The train (augmenting) or eval transform; output size ``preprocessing.input_size``."""
    size = preprocessing.input_size
    normalize = ToTensorNormalize(preprocessing.mean, preprocessing.std)
    if not train:
        return Compose([ResizeShorter(preprocessing.resize_size, preprocessing.interpolation), CenterCrop(size),
                        normalize])
    ts: list = [train_crop(cfg, size)]
    if cfg.hflip > 0:
        ts.append(AlternatingHorizontalFlip(cfg.hflip) if cfg.hflip_mode == "alternating"
                  else RandomHorizontalFlip(cfg.hflip))
    if cfg.three_augment:
        # The official --ThreeAugment transform: no RandAugment, no random erasing (DataConfig refuses them).
        ts.append(ThreeAugment())
        if cfg.color_jitter > 0:
            ts.append(ColorJitter(cfg.color_jitter))
        return Compose([*ts, normalize])
    if cfg.auto_augment:
        ts.append(RandAugment(cfg.auto_augment, fill=mean_fill(preprocessing.mean),
                              interpolation=cfg.train_interpolation))
    elif cfg.color_jitter > 0:
        ts.append(ColorJitter(cfg.color_jitter))  # timm: colour jitter only without auto-augment
    ts.append(normalize)
    if cfg.reprob > 0:
        ts.append(RandomErasing(cfg.reprob, mode=cfg.remode, max_count=cfg.recount))
    return Compose(ts)
