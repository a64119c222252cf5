"""``build_dataset(cfg, split)``: the data set a config names, as ``(PIL RGB image, int label)`` samples.

- imagefolder, csv: files under ``cfg.root`` (``deit.data.folders``);
- digits, synthetic, cifar10, cifar100: built in or read from a local archive (``deit.data.builtin``).

Splits: "train", "val", and "train_rest" (the training images *not* kept by ``train_per_class``; e.g. images
for a teacher to label). Structural problems (no images, empty class folder, val class unknown to train, bad
label) raise ``DataError`` when the data set is built, before any training.
"""

from __future__ import annotations

import os
from dataclasses import replace

from deit.data import builtin
from deit.data.base import ImageDataset, SubsetDataset, per_class_subset
from deit.data.config import DOWNLOADABLE, FILE_DATASETS, DataConfig
from deit.data.download import fetch_dataset
from deit.data.folders import build_csv, build_imagefolder
from deit.data.images import DataError

SPLITS: tuple[str, ...] = ("train", "val", "train_rest")


def build_dataset(cfg: DataConfig, split: str = "train") -> ImageDataset:
    """The data set ``cfg`` names, for ``split`` in {"train", "val", "train_rest"}."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train_rest" and cfg.train_per_class is None:
        raise ValueError("split 'train_rest' is what train_per_class leaves out: set train_per_class")
    base_split = "val" if split == "val" else "train"
    if cfg.dataset in DOWNLOADABLE and not cfg.root:
        cfg = replace(cfg, root=str(fetch_dataset(cfg.dataset)))  # the official archive, downloaded once
    if cfg.dataset in FILE_DATASETS and not os.path.exists(cfg.root):
        raise FileNotFoundError(f"data root {cfg.root} does not exist")
    if cfg.dataset == "imagefolder":
        ds = build_imagefolder(cfg.root, base_split, cfg)
    elif cfg.dataset == "csv":
        ds = build_csv(cfg.root, base_split, cfg)
    else:
        ds = builtin.build(cfg, base_split)
    if len(ds) == 0:
        raise DataError(f"the {split} split of {cfg.dataset} is empty")
    if base_split == "train" and cfg.train_per_class is not None:
        kept, rest = per_class_subset(ds.targets, cfg.train_per_class, cfg.split_seed)
        ds = SubsetDataset(ds, kept if split == "train" else rest)
    return ds


__all__ = ["SPLITS", "build_dataset"]
