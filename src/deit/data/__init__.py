"""Data: data sets, the DeiT augmentation pipeline (no torchvision), samplers and the loader factory.

Data sets are named by a registry (``deit.data.registry``): the built-in ones (``DatasetName``) and any registered
with ``register_dataset(name, builder)``; what a loader's batches are (dtype, layout, range, where normalisation
happens) is written down in ``deit.data.loader``.

Typical use::

    cfg = DataConfig(dataset="imagefolder", root="/data/imagenet", batch_size=128)
    train = build_loader(cfg, "train", preprocessing=model.preprocessing, seed=0)
    mixup = build_mixup(cfg, num_classes=len(train.dataset.classes))
    for epoch in range(start_epoch, epochs):
        train.sampler.set_epoch(epoch, start_batch=k if epoch == start_epoch else 0)  # k: resume mid-epoch
        for x, y in train:
            x, soft = mixup(x, y, generator=step_generator)

With ``DataConfig(device_augment=True)`` the train loader yields uint8 ``DeviceBatch`` images and the rest of the
recipe runs on the device: ``x = build_device_augment(cfg, model.preprocessing)(batch.to(device))``.

Reproducibility: a sample's augmentation depends only on (seed, epoch, its position in the epoch's stream),
never on workers; see ``deit.data.samplers`` and ``deit.data.loader``.
"""

from deit.data import download  # noqa: F401  (deit.data.download: the CIFAR archives)
from deit.data.base import ImageDataset
from deit.data.benchmark import benchmark_augmentation
from deit.data.config import DataConfig
from deit.data.datasets import SPLITS, build_dataset  # (its import registers the built-in data sets)
from deit.data.device_augment import DeviceAugment, DeviceBatch, build_device_augment
from deit.data.images import IMG_EXTENSIONS, BadImageError, DataError, decode_image, to_rgb
from deit.data.loader import Loader, TransformedDataset, build_loader, build_sampler
from deit.data.mixup import Mixup, build_mixup, smooth_one_hot
from deit.data.randaugment import RandAugment, parse_rand_augment
from deit.data.registry import (
    BUILTIN_DATASETS,
    DatasetName,
    DatasetSpec,
    dataset_names,
    dataset_spec,
    register_dataset,
)
from deit.data.samplers import EvalSampler, RepeatAugSampler, ShuffleSampler
from deit.data.three_augment import ColorJitter, ThreeAugment
from deit.data.transforms import RandomErasing, RandomResizedCrop, SimpleRandomCrop, build_transform

__all__ = [
    "BUILTIN_DATASETS",
    "IMG_EXTENSIONS",
    "SPLITS",
    "BadImageError",
    "ColorJitter",
    "DataConfig",
    "DataError",
    "DatasetName",
    "DatasetSpec",
    "DeviceAugment",
    "DeviceBatch",
    "EvalSampler",
    "ImageDataset",
    "Loader",
    "Mixup",
    "RandAugment",
    "RandomErasing",
    "RandomResizedCrop",
    "RepeatAugSampler",
    "ShuffleSampler",
    "SimpleRandomCrop",
    "ThreeAugment",
    "TransformedDataset",
    "benchmark_augmentation",
    "build_dataset",
    "build_device_augment",
    "build_loader",
    "build_mixup",
    "build_sampler",
    "build_transform",
    "dataset_names",
    "dataset_spec",
    "decode_image",
    "parse_rand_augment",
    "register_dataset",
    "smooth_one_hot",
    "to_rgb",
]
