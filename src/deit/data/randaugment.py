"""RandAugment on PIL images, with timm's semantics for config strings such as ``rand-m9-mstd0.5-inc1``.

Config string: ``rand`` then dash-separated sections, in any order:
  ``m<int>``    magnitude, 0..10 scale (default 10)
  ``n<int>``    ops applied per image (default 2)
  ``mstd<f>``   std of Gaussian noise added to the magnitude per op call (default 0; > 100 means uniform 0..m)
  ``mmax<int>`` upper clip of the noisy magnitude (default 10)
  ``inc<0|1>``  use the "increasing" op set, whose severity grows with magnitude (default 0)
  ``p<f>``      probability that each chosen op is applied (default 0.5, as in timm)
  ``w<int>``    accepted for compatibility but not implemented (weighted op choice): rejected with a message.

Per image: ``n`` ops are drawn uniformly *with* replacement from the op set; each is applied with probability
``p`` at magnitude ``clip(N(m, mstd), 0, mmax)``, drawn anew for every op call. Level-to-argument mappings and
the op set are timm's (see ``_OPS``); geometric ops fill with the dataset mean (``fill``) and resample
with the train interpolation. All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

LEVEL_DENOM = 10.0

RAND_TRANSFORMS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)

PIL_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


# ---- the ops: (image, argument, fill colour, resample filter) -> image, by kind (an op's kind names what it does;
# RAND_TRANSFORMS and their increasing variants map onto the kinds in _OPS). Geometric kinds are affine maps, whose
# matrices (from output to input pixel, as PIL's transform takes them) are `affine_matrix`'s: the device stage
# (deit.data.device_augment) applies the same matrices.
Fill = tuple[int, ...]
OpFn = Callable[[Image.Image, float, Fill, Image.Resampling], Image.Image]
AFFINE_KINDS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def rotate_matrix(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """PIL's ``Image.rotate`` matrix (counter-clockwise about the centre, no expand), computed as PIL does."""
    angle = -math.radians(degrees % 360.0)
    a, b, d, e = (round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15),
                  round(math.cos(angle), 15))
    cx, cy = width / 2, height / 2
    return a, b, a * -cx + b * -cy + 0.0 + cx, d, e, d * -cx + e * -cy + 0.0 + cy


def affine_matrix(kind: str, arg: float, width: int, height: int) -> tuple[float, ...]:
    """The affine matrix of a geometric op of ``AFFINE_KINDS`` at argument ``arg`` on a ``width`` x ``height``
    image."""
    if kind == "rotate":
        return rotate_matrix(arg, width, height)
    return {"shear_x": (1.0, arg, 0.0, 0.0, 1.0, 0.0), "shear_y": (1.0, 0.0, 0.0, arg, 1.0, 0.0),
            "translate_x": (1.0, 0.0, arg * width, 0.0, 1.0, 0.0),
            "translate_y": (1.0, 0.0, 0.0, 0.0, 1.0, arg * height)}[kind]


def _affine(img: Image.Image, matrix: tuple[float, ...], fill: Fill, resample: Image.Resampling) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _auto_contrast(img: Image.Image, v: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    return ImageOps.autocontrast(img)


def _equalize(img: Image.Image, v: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    return ImageOps.equalize(img)


def _invert(img: Image.Image, v: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    return ImageOps.invert(img)


def _rotate(img: Image.Image, degrees: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    return img.rotate(degrees, resample=resample, fillcolor=fill)


def _posterize(img: Image.Image, bits: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    # Keep the top `bits` bits; 0 bits gives black, as old Pillow did (Pillow >= 11 refuses bits=0).
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - int(bits)) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


def _solarize(img: Image.Image, thresh: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    return ImageOps.solarize(img, int(thresh))


def _solarize_add(img: Image.Image, add: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
    lut = [min(255, i + int(add)) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _enhancer(cls: type) -> OpFn:
    def op(img: Image.Image, factor: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
        return cls(img).enhance(factor)

    return op


def _geometric(kind: str) -> OpFn:
    def op(img: Image.Image, arg: float, fill: Fill, resample: Image.Resampling) -> Image.Image:
        return _affine(img, affine_matrix(kind, arg, *img.size), fill, resample)

    return op


PIL_OPS: dict[str, OpFn] = {
    "auto_contrast": _auto_contrast, "equalize": _equalize, "invert": _invert, "rotate": _rotate,
    "posterize": _posterize, "solarize": _solarize, "solarize_add": _solarize_add,
    "color": _enhancer(ImageEnhance.Color), "contrast": _enhancer(ImageEnhance.Contrast),
    "brightness": _enhancer(ImageEnhance.Brightness), "sharpness": _enhancer(ImageEnhance.Sharpness),
    **{kind: _geometric(kind) for kind in AFFINE_KINDS if kind != "rotate"},
}


# ---- level -> argument: timm's mappings of f = magnitude / 10 and a sign (+-1, random for signed ops)
LevelFn = Callable[[float, float], float]


def _none(f: float, sign: float) -> float:
    return 0.0


def _enhance(f: float, sign: float) -> float:  # [0.1, 1.9]
    return f * 1.8 + 0.1


def _enhance_increasing(f: float, sign: float) -> float:  # blend factor moves away from 1 (no change)
    return max(0.1, 1.0 + sign * f * 0.9)


def _linear(scale: float) -> LevelFn:
    return lambda f, sign: sign * f * scale


def _posterize_level(f: float, sign: float) -> float:  # bits kept: 0..4
    return int(f * 4)


def _posterize_increasing_level(f: float, sign: float) -> float:  # bits kept: 4..0
    return 4 - int(f * 4)


def _solarize_level(f: float, sign: float) -> float:  # threshold 0..256
    return int(f * 256)


def _solarize_increasing_level(f: float, sign: float) -> float:  # threshold 256..0
    return 256 - int(f * 256)


def _solarize_add_level(f: float, sign: float) -> float:  # 0..110 added below 128
    return int(f * 110)


# name -> (kind, level -> argument, whether the argument gets a random sign)
_OPS: dict[str, tuple[str, LevelFn, bool]] = {
    "AutoContrast": ("auto_contrast", _none, False),
    "Equalize": ("equalize", _none, False),
    "Invert": ("invert", _none, False),
    "Rotate": ("rotate", _linear(30.0), True),
    "Posterize": ("posterize", _posterize_level, False),
    "PosterizeIncreasing": ("posterize", _posterize_increasing_level, False),
    "Solarize": ("solarize", _solarize_level, False),
    "SolarizeIncreasing": ("solarize", _solarize_increasing_level, False),
    "SolarizeAdd": ("solarize_add", _solarize_add_level, False),
    "ShearX": ("shear_x", _linear(0.3), True),
    "ShearY": ("shear_y", _linear(0.3), True),
    "TranslateXRel": ("translate_x", _linear(0.45), True),
    "TranslateYRel": ("translate_y", _linear(0.45), True),
}
for _name in ("Color", "Contrast", "Brightness", "Sharpness"):
    _OPS[_name] = (_name.lower(), _enhance, False)
    _OPS[_name + "Increasing"] = (_name.lower(), _enhance_increasing, True)


def op_kind(name: str) -> str:
    """The kind of the RandAugment op ``name`` (a key of ``PIL_OPS``)."""
    return _OPS[name][0]


class OpDraw(NamedTuple):
    """One op an image gets: its name, magnitude (0..10 scale) and the argument its kind is called with."""

    name: str
    magnitude: float
    arg: float


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed RandAugment config string."""

    magnitude: float = 10.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False
    prob: float = 0.5

    @property
    def op_names(self) -> tuple[str, ...]:
        return RAND_INCREASING_TRANSFORMS if self.increasing else RAND_TRANSFORMS


def parse_rand_augment(config: str) -> RandAugmentSpec:
    """Parse ``rand-m9-mstd0.5-inc1`` and friends; ValueError naming the part that is wrong."""
    parts = str(config).split("-")
    if parts[0] != "rand":
        raise ValueError(f"auto_augment {config!r}: only RandAugment strings starting with 'rand' are supported "
                         "(e.g. 'rand-m9-mstd0.5-inc1'); use None to turn it off")
    kw: dict = {}
    for part in parts[1:]:
        m = re.fullmatch(r"([a-z]+)(\d+(?:\.\d*)?|\.\d+)", part)
        if not m:
            raise ValueError(f"auto_augment {config!r}: cannot read section {part!r} (expected e.g. m9, n2, "
                             "mstd0.5, mmax10, inc1, p0.5)")
        key, val = m.groups()
        if key == "m":
            kw["magnitude"] = float(val)
        elif key == "n":
            kw["num_ops"] = int(float(val))
        elif key == "mstd":
            std = float(val)
            kw["magnitude_std"] = float("inf") if std > 100 else std
        elif key == "mmax":
            kw["magnitude_max"] = float(val)
        elif key == "inc":
            kw["increasing"] = bool(int(float(val)))
        elif key == "p":
            kw["prob"] = float(val)
            if not 0.0 <= kw["prob"] <= 1.0:
                raise ValueError(f"auto_augment {config!r}: p must be in [0, 1]")
        elif key == "w":
            raise ValueError(f"auto_augment {config!r}: weighted op choice ('w') is not supported")
        else:
            raise ValueError(f"auto_augment {config!r}: unknown section {part!r}")
    return RandAugmentSpec(**kw)


class RandAugment:
    """``RandAugment(spec_or_string, fill=(124, 116, 104), interpolation="bicubic")``; call as ``ra(img, rng)``.

    ``record`` (a list, or None) receives ``(op_name, magnitude)`` for every op applied: used by the tests.
    """

    def __init__(self, spec: RandAugmentSpec | str, fill: tuple[int, ...] = (128, 128, 128),
                 interpolation: str = "bicubic"):
        self.spec = parse_rand_augment(spec) if isinstance(spec, str) else spec
        self.fill = tuple(int(v) for v in fill)
        self.resample = PIL_INTERPOLATION[interpolation]
        self.record: list | None = None

    def sample_magnitude(self, rng: np.random.Generator) -> float:
        s = self.spec
        m = s.magnitude
        if s.magnitude_std == float("inf"):
            m = rng.uniform(0.0, m)
        elif s.magnitude_std > 0:
            m = rng.normal(m, s.magnitude_std)
        return float(max(0.0, min(m, s.magnitude_max)))

    def draw(self, rng: np.random.Generator) -> list[OpDraw]:
        """The ops one image gets, in order, drawn from ``rng`` exactly as applying them draws."""
        names, out = self.spec.op_names, []
        for k in rng.integers(0, len(names), size=self.spec.num_ops):
            name = names[k]
            if self.spec.prob < 1.0 and rng.random() >= self.spec.prob:
                continue
            magnitude = self.sample_magnitude(rng)
            out.append(OpDraw(name, magnitude, self.argument(name, magnitude, rng)))
        return out

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        for name, magnitude, arg in self.draw(rng):
            img = PIL_OPS[op_kind(name)](img, arg, self.fill, self.resample)
            if self.record is not None:
                self.record.append((name, magnitude))
        return img

    @staticmethod
    def argument(name: str, magnitude: float, rng: np.random.Generator | None = None) -> float:
        """The argument op ``name`` is called with at ``magnitude``; the sign of signed ops from ``rng`` (positive
        without one)."""
        _, level, signed = _OPS[name]
        sign = -1.0 if signed and rng is not None and rng.random() < 0.5 else 1.0
        return float(level(magnitude / LEVEL_DENOM, sign))

    def apply_op(self, img: Image.Image, name: str, magnitude: float,
                 rng: np.random.Generator | None = None) -> Image.Image:
        """One named op at a magnitude; the sign of signed ops from ``rng`` (positive without one)."""
        return PIL_OPS[op_kind(name)](img, self.argument(name, magnitude, rng), self.fill, self.resample)

    def __repr__(self) -> str:
        return f"RandAugment({self.spec}, fill={self.fill})"
