"""`DataConfig`: every data and augmentation setting, with the DeiT paper's defaults.

Mean, std, crop_pct, the eval interpolation and the network's input size are not here: they belong to the model
(`deit.models.Preprocessing`) and are passed to `build_transform` / `build_loader` next to this config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from deit.data.registry import dataset_spec
from deit.models.preprocessing import INTERPOLATIONS
from deit.runtime.typedconfig import setting

ERASE_MODES: tuple[str, ...] = ("pixel", "rand", "const")
BAD_IMAGE_POLICIES: tuple[str, ...] = ("skip", "fail")
TRAIN_CROPS: tuple[str, ...] = ("resized", "padded", "simple")
HFLIP_MODES: tuple[str, ...] = ("random", "alternating")


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    if a > b:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return a, b


@dataclass
class DataConfig:
    """Data set, loader and augmentation settings. Defaults are the DeiT ImageNet recipe. Fields declare with
    ``setting(..., stream=False)`` that they do not change the data a run's networks see (the teacher-output cache
    key leaves them out) and with ``resumable=True`` that a continued run may change them.

    ``img_size`` is the size the built-in data sets (digits, synthetic) are rendered at; the size the network
    sees is always ``Preprocessing.input_size`` (train crops are resized to it, eval images centre-cropped to it).
    """

    # -- which data
    # A registered data set (deit.data.registry): a built-in one (DatasetName) or one of yours (register_dataset).
    # A str, not the Literal: names registered at run time are valid too.
    dataset: str = "digits"
    root: str | None = setting(None, stream=False)  # where the data is, not what it is (the content is fingerprinted)
    # dataset=given: the fingerprints (train/val) of the data set objects given to deit.train.train(cfg, datasets=...),
    # recorded so that a run continues only on the same data; null for a named data set (its config says what it is).
    fingerprint: str | None = setting(None, stream=False)
    img_size: int = 224
    val_fraction: float = 0.1  # one-folder imagefolder / one-file csv: fraction held out for val (stratified)
    split_seed: int = 0  # seeds the val_fraction split and the train_per_class subset
    train_per_class: int | None = None  # keep this many training images per class (stratified, seeded)
    synthetic_classes: int = 10
    synthetic_train: int = 512
    synthetic_val: int = 128
    on_bad_image: str = "skip"  # unreadable file: "skip" (replace by another sample, log it) or "fail"

    # -- loader
    batch_size: int = 64  # per device
    num_workers: int = setting(4, stream=False, resumable=True)
    pin_memory: bool = setting(True, stream=False, resumable=True)  # only takes effect when CUDA is available
    persistent_workers: bool = setting(True, stream=False, resumable=True)  # only when num_workers > 0

    # -- per-image train augmentation
    # "resized": RandomResizedCrop (area fraction in scale, aspect in ratio; the ImageNet recipe); "padded": resize
    # to the input size, pad crop_padding pixels by reflection and crop at a random offset (the small-image recipe,
    # e.g. CIFAR); "simple": DeiT III's simple random crop (official --src): resize the shorter side to the input
    # size keeping the aspect ratio, pad crop_padding pixels by reflection, crop at a random offset
    train_crop: str = "resized"
    crop_padding: int = 4
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    # "random": each sample flipped with probability hflip; "alternating" (airbench's): each image's flip in the
    # first epoch is drawn once (probability hflip, from seed and its index), and every odd epoch flips the opposite
    # way, so over any two consecutive epochs every image is seen both ways (with repeated_aug, its copies alike).
    hflip_mode: str = "random"
    train_interpolation: str = "bicubic"
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    # The workers decode and crop (RandomResizedCrop: cut the box, which the device resizes) and send uint8 pixels
    # with the drawn parameters of the rest of the recipe (flip, RandAugment or 3-Augment and colour jitter,
    # normalisation, erasing), which runs batched on the training device (deit.data.device_augment)
    device_augment: bool = False
    # DeiT III's 3-Augment (official --ThreeAugment), which replaces the train transform: after the crop and flip,
    # one of grayscale, solarization, Gaussian blur per image, then color_jitter. It has no RandAugment and no
    # random erasing: auto_augment must be none and reprob 0.
    three_augment: bool = False
    # ColorJitter(j, j, j) (brightness, contrast, saturation; no hue), 0: off. Applied after 3-Augment's op, or,
    # without three_augment, only when auto_augment is none (timm's rule, which the DeiT code follows).
    color_jitter: float = 0.0

    # -- batch-level augmentation and targets
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = setting(0.1, stream=False)  # label side: the images do not change

    # -- sampling
    repeated_aug: bool = True
    num_repeats: int = 3

    def __post_init__(self) -> None:
        if dataset_spec(self.dataset).needs_root and not self.root:
            raise ValueError(f"dataset {self.dataset!r} reads files: give its root (a folder or archive path)")
        if self.root is not None:
            self.root = str(self.root)
        for name, lo in (("img_size", 8), ("batch_size", 1), ("recount", 1), ("num_repeats", 1),
                         ("synthetic_classes", 1), ("synthetic_train", 1), ("synthetic_val", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        if self.train_per_class is not None and (not isinstance(self.train_per_class, int)
                                                 or self.train_per_class < 1):
            raise ValueError(f"train_per_class must be None or an integer >= 1, got {self.train_per_class!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        self.scale = _pair("scale", self.scale)
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        self.ratio = _pair("ratio", self.ratio)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {self.ratio}")
        for name in ("hflip", "reprob", "mixup_prob", "mixup_switch_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {v}")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a Beta alpha, >= 0 (0 = off), got {getattr(self, name)}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.train_interpolation not in INTERPOLATIONS:
            raise ValueError(f"train_interpolation must be one of {INTERPOLATIONS}, got {self.train_interpolation!r}")
        if self.hflip_mode not in HFLIP_MODES:
            raise ValueError(f"hflip_mode must be one of {HFLIP_MODES}, got {self.hflip_mode!r}")
        if self.train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop must be one of {TRAIN_CROPS}, got {self.train_crop!r}")
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an integer >= 0, got {self.crop_padding!r}")
        if not isinstance(self.device_augment, bool):
            raise ValueError(f"device_augment must be true or false, got {self.device_augment!r}")
        if self.remode not in ERASE_MODES:
            raise ValueError(f"remode must be one of {ERASE_MODES}, got {self.remode!r}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")
        if self.auto_augment in ("", "none", "None"):
            self.auto_augment = None
        if self.auto_augment is not None:
            from deit.data.randaugment import parse_rand_augment

            parse_rand_augment(self.auto_augment)  # raises ValueError naming the bad part
        self._check_colour_augmentation()
        if self.mixup_active and self.batch_size % 2:
            raise ValueError(f"mixup/cutmix pair each image with the batch flipped: batch_size must be even, "
                             f"got {self.batch_size} (or set mixup=0 and cutmix=0)")

    def _check_colour_augmentation(self) -> None:
        if isinstance(self.color_jitter, bool) or not isinstance(self.color_jitter, (int, float)) or not (
                0.0 <= self.color_jitter < float("inf")):
            raise ValueError(f"color_jitter must be a number >= 0 (0: off), got {self.color_jitter!r}")
        if self.three_augment and (self.auto_augment is not None or self.reprob > 0):
            raise ValueError(
                f"three_augment replaces RandAugment and random erasing (the official --ThreeAugment transform has "
                f"neither), and auto_augment={self.auto_augment!r}, reprob={self.reprob} ask for them: set "
                "data.auto_augment=none and data.reprob=0 (or data.three_augment=false)")
        if self.color_jitter > 0 and self.auto_augment is not None and not self.three_augment:
            raise ValueError(
                f"color_jitter={self.color_jitter} applies after 3-Augment or, without it, only when RandAugment is "
                f"off (timm's rule, which DeiT follows), and auto_augment={self.auto_augment!r}: set "
                "data.three_augment=true, data.auto_augment=none or data.color_jitter=0")

    @property
    def mixup_active(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"], d["ratio"] = list(self.scale), list(self.ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown data setting(s) {unknown}; known: {sorted(known)}")
        return cls(**d)
