"""The preprocessing a model expects. Defined once per model and stored inside every checkpoint we write."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTERPOLATIONS: tuple[str, ...] = ("bicubic", "bilinear", "nearest")


def default_crop_pct(input_size: int) -> float:
    """The paper's eval crop for an input size: resize to size / 0.875 and centre-crop below 384 px (224 -> 256);
    the 384 px models see the whole image (crop_pct 1.0)."""
    return 0.875 if input_size < 384 else 1.0


@dataclass(frozen=True)
class Preprocessing:
    """Eval-time input pipeline: resize shorter side to input_size / crop_pct, centre-crop, normalise."""

    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} have different lengths")
        if not all(s > 0 for s in self.std):  # also refuses NaN
            raise ValueError(f"std {self.std} must be positive: images are divided by it")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop (256 for 224 at crop_pct 0.875)."""
        return int(self.input_size / self.crop_pct)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
