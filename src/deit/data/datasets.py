"""The built-in data sets, registered by name, and ``build_dataset(cfg, split)``: the data set a config names, as
``(PIL RGB image, int label)`` samples.

- digits, synthetic: built in (``deit.data.builtin``);
- csv, cifar10, cifar100, imagefolder: files under ``cfg.root`` (``deit.data.folders``, ``deit.data.builtin``);
  the CIFAR archives are downloaded once when no root is given (``deit.data.download``);
- given: the data set objects passed to ``deit.train.train(cfg, datasets=(train_set, val_set))``; a config records
  them (``data.dataset: given`` and their fingerprint, :func:`given_data`) but cannot rebuild them;
- any data set registered with ``deit.data.register_dataset``.

Splits: "train", "val", and "train_rest" (the training images *not* kept by ``train_per_class``; e.g. images
for a teacher to label). Structural problems (no images, empty class folder, val class unknown to train, bad
label) raise ``DataError`` when the data set is built, before any training.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import partial

from deit.data.base import ImageDataset, SubsetDataset, per_class_subset
from deit.data.builtin import build_cifar, build_digits, build_synthetic
from deit.data.check import check_cifar, check_csv, check_imagefolder
from deit.data.config import DataConfig
from deit.data.download import fetch_dataset
from deit.data.folders import build_csv, build_imagefolder
from deit.data.formats import cifar_detector, describe_cifar, describe_imagefolder, is_csv, is_imagefolder
from deit.data.images import DataError
from deit.data.registry import dataset_spec, register_dataset

SPLITS: tuple[str, ...] = ("train", "val", "train_rest")
GIVEN = "given"  # the name a config records for data set objects given to a run


def _given(cfg: DataConfig, split: str) -> ImageDataset:
    raise ValueError("data.dataset=given names data set objects that were passed to deit.train.train(cfg, "
                     "datasets=(train_set, val_set)); a config cannot rebuild them: pass them again, or name a "
                     "registered data set in data.dataset")


# Registration order is detection order (deit.data.formats.detect_format): imagefolder, the catch-all for a folder
# with sub-folders, comes last.
register_dataset("digits", build_digits, description="scikit-learn's 8x8 digits, upsampled to data.img_size")
register_dataset("synthetic", build_synthetic, description="deterministic class-coloured noise, for tests")
register_dataset("csv", lambda cfg, split: build_csv(cfg.root, split, cfg), reads_root=True, detect=is_csv,
                 describe_root=lambda path: "a csv list", check=check_csv,
                 description="path,label rows: ROOT/train.csv and ROOT/val.csv, or one FILE.csv")


def _register_cifar(name: str, title: str, folder: str, markers: frozenset[str]) -> None:
    register_dataset(name, build_cifar, reads_root=True, download=partial(fetch_dataset, name),
                     detect=cifar_detector(folder, markers), describe_root=describe_cifar(title), check=check_cifar,
                     description=f"the {title} python archive (downloaded once when data.root is not given)")


_register_cifar("cifar10", "CIFAR-10", "cifar-10-batches-py", frozenset({"batches.meta"}))
_register_cifar("cifar100", "CIFAR-100", "cifar-100-python", frozenset({"meta", "train", "test"}))
register_dataset("imagefolder", lambda cfg, split: build_imagefolder(cfg.root, split, cfg), reads_root=True,
                 detect=is_imagefolder, describe_root=describe_imagefolder, check=check_imagefolder,
                 description="ROOT/train/CLASS/*.jpg with ROOT/val/ (or validation/, test/), or one ROOT/CLASS/")
register_dataset(GIVEN, _given, description="data set objects given to deit.train.train(cfg, datasets=...)")


def build_dataset(cfg: DataConfig, split: str = "train") -> ImageDataset:
    """The data set ``cfg`` names, for ``split`` in {"train", "val", "train_rest"}."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train_rest" and cfg.train_per_class is None:
        raise ValueError("split 'train_rest' is what train_per_class leaves out: set train_per_class")
    base_split = "val" if split == "val" else "train"
    spec = dataset_spec(cfg.dataset)
    if spec.downloadable and not cfg.root:
        cfg = replace(cfg, root=str(spec.download()))  # the official archive, downloaded once
    if spec.reads_root and not os.path.exists(cfg.root):
        raise FileNotFoundError(f"data root {cfg.root} does not exist")
    ds = spec.build(cfg, base_split)
    if not isinstance(ds, ImageDataset):
        raise TypeError(f"the builder of data set {cfg.dataset!r} returned {type(ds).__name__}, not a "
                        "deit.data.ImageDataset (subclass it: classes, targets and load(index))")
    if len(ds) == 0:
        raise DataError(f"the {split} split of {cfg.dataset} is empty")
    if base_split == "train" and cfg.train_per_class is not None:
        kept, rest = per_class_subset(ds.targets, cfg.train_per_class, cfg.split_seed)
        ds = SubsetDataset(ds, kept if split == "train" else rest)
    return ds


def given_data(cfg: DataConfig, datasets: tuple[ImageDataset, ImageDataset]) -> DataConfig:
    """``cfg`` describing the data set objects ``(train_set, val_set)`` given to a run: ``dataset: given``, no root,
    and the sets' fingerprints (``train/val``), by which a continued run recognises its data."""
    if not isinstance(datasets, (tuple, list)) or len(datasets) != 2:
        size = f" of {len(datasets)}" if isinstance(datasets, (tuple, list)) else ""
        raise TypeError(f"datasets must be a pair (train_set, val_set) of deit.data.ImageDataset, got "
                        f"{type(datasets).__name__}{size}")
    train_set, val_set = datasets
    for split, ds in (("train", train_set), ("val", val_set)):
        if not isinstance(ds, ImageDataset):
            raise TypeError(f"datasets=(train_set, val_set): the {split} set is a {type(ds).__name__}, not a "
                            "deit.data.ImageDataset (subclass it: classes, targets and load(index))")
        if len(ds) == 0:
            raise DataError(f"datasets=(train_set, val_set): the {split} set is empty")
    if list(val_set.classes) != list(train_set.classes):
        raise ValueError("datasets=(train_set, val_set): the two sets name different classes; a label must mean "
                         "the same class in both (give the val set the train set's classes list)")
    return replace(cfg, dataset=GIVEN, root=None, fingerprint=f"{train_set.fingerprint()}/{val_set.fingerprint()}")


__all__ = ["GIVEN", "SPLITS", "build_dataset", "given_data"]
