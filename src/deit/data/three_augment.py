"""3-Augment, the train augmentation of DeiT III, and the colour jitter that follows it.

Per image, after the crop and the flip: one of grayscale, solarization or Gaussian blur, chosen uniformly, then
(when ``data.color_jitter`` > 0) torchvision's ``ColorJitter(j, j, j)``: brightness, contrast and saturation
factors uniform in ``[max(0, 1 - j), 1 + j]``, applied in a random order, no hue. The definitions are those of
the official ``augment.py`` (facebookresearch/deit): ``Grayscale(3)``, ``ImageOps.solarize`` at PIL's default
threshold 128 (values >= 128 inverted), ``ImageFilter.GaussianBlur`` with a radius uniform in [0.1, 2.0].

Every op is a pure function of the image and explicit parameters (:func:`grayscale`, :func:`solarize`,
:func:`gaussian_blur`, :func:`apply_three_augment`, :func:`color_jitter`); the transforms only draw those
parameters from the per-sample ``numpy.random.Generator`` (``get_params``, a fixed number of draws per image, so
another implementation — a device-side stage — can draw the same parameters from the same generator) and apply
them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# The choice's index -> op; uniform over the three.
THREE_AUGMENT_OPS: tuple[str, ...] = ("grayscale", "solarize", "gaussian_blur")
SOLARIZE_THRESHOLD = 128  # PIL's default, which the official Solarization leaves as it is
BLUR_RADIUS: tuple[float, float] = (0.1, 2.0)  # the official GaussianBlur's radius_min, radius_max
# The jitter's index -> its PIL enhancer (what torchvision's adjust_* do on PIL images).
JITTER_OPS: tuple[str, ...] = ("brightness", "contrast", "saturation")
_ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def grayscale(img: Image.Image) -> Image.Image:
    """Luma (PIL's ITU-R 601-2 conversion to "L") copied into three channels, like ``Grayscale(3)``."""
    return img.convert("L").convert("RGB")


def solarize(img: Image.Image, threshold: int = SOLARIZE_THRESHOLD) -> Image.Image:
    """Every value >= ``threshold`` becomes 255 - value."""
    return ImageOps.solarize(img, threshold)


def gaussian_blur(img: Image.Image, radius: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius=radius))


def apply_three_augment(img: Image.Image, op: int, radius: float) -> Image.Image:
    """Op ``op`` of :data:`THREE_AUGMENT_OPS`; ``radius`` is the blur's (ignored by the other two)."""
    if op == 0:
        return grayscale(img)
    if op == 1:
        return solarize(img)
    if op == 2:
        return gaussian_blur(img, radius)
    raise ValueError(f"3-Augment op index must be 0, 1 or 2 ({', '.join(THREE_AUGMENT_OPS)}), got {op!r}")


class ThreeAugment:
    """One of grayscale, solarization, Gaussian blur, uniformly at random."""

    def get_params(self, rng: np.random.Generator) -> tuple[int, float]:
        """(op index, blur radius); the radius is drawn for every image, whichever op is chosen."""
        op = int(rng.integers(0, len(THREE_AUGMENT_OPS)))
        return op, float(rng.uniform(*BLUR_RADIUS))

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return apply_three_augment(img, *self.get_params(rng))


def color_jitter(img: Image.Image, order: Sequence[int], factors: Sequence[float]) -> Image.Image:
    """Enhancer ``i`` of :data:`JITTER_OPS` at ``factors[i]``, for ``i`` in ``order`` (factor 1: unchanged).
    Brightness blends with black, contrast with the grey of the image's mean luma, saturation with its grayscale."""
    for i in order:
        img = _ENHANCERS[i](img).enhance(float(factors[i]))
    return img


class ColorJitter:
    """torchvision's ``ColorJitter(strength, strength, strength)``: each factor uniform in
    ``[max(0, 1 - strength), 1 + strength]``, the three applied in a uniformly random order."""

    def __init__(self, strength: float):
        if strength < 0:
            raise ValueError(f"colour jitter strength must be >= 0, got {strength}")
        self.strength = float(strength)
        self.low, self.high = max(0.0, 1.0 - self.strength), 1.0 + self.strength

    def get_params(self, rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """(order, factors): a permutation of (0, 1, 2), then the factors of brightness, contrast, saturation."""
        order = tuple(int(i) for i in rng.permutation(len(JITTER_OPS)))
        return order, tuple(float(f) for f in rng.uniform(self.low, self.high, size=len(JITTER_OPS)))

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return color_jitter(img, *self.get_params(rng))


__all__ = [
    "BLUR_RADIUS",
    "JITTER_OPS",
    "SOLARIZE_THRESHOLD",
    "THREE_AUGMENT_OPS",
    "ColorJitter",
    "ThreeAugment",
    "apply_three_augment",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "solarize",
]
