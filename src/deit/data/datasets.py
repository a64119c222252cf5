"""Data sets returning ``(PIL RGB image, int label)`` with ``.classes``, and ``build_dataset(cfg, split)``.

- imagefolder: ``ROOT/{train,val}/CLASS/*.jpg`` (the ImageNet layout), or ``ROOT/CLASS/*.jpg`` split by
  ``val_fraction``. Classes are the sub-folder names sorted as torchvision sorts them, so index k means the same
  class as in torchvision/timm; the val split uses the train split's indices. Files are found recursively inside
  each class folder (symlinks followed) and kept if their extension is one of ``IMG_EXTENSIONS``; folders whose
  name starts with '.' (``.ipynb_checkpoints``, ...) are never classes.
- csv: ``ROOT/train.csv`` and ``ROOT/val.csv``, or one ``FILE.csv`` split by ``val_fraction``; rows ``path,label``
  (an optional header row ``path,label``), paths relative to the csv's folder. Labels all integers: class k is
  named "k" and there are max+1 classes; otherwise labels are names, sorted, taken from the train rows.
- digits, synthetic, cifar10, cifar100: see ``deit.data.builtin``.

Splits: "train", "val", and "train_rest" (the training images *not* kept by ``train_per_class``; e.g. images
for a teacher to label). Structural problems (no images, empty class folder, val class unknown to train, bad
label) raise ``DataError`` when the data set is built, before any training. An unreadable image found while
loading is replaced by another sample of the same split (``on_bad_image="skip"``: logged and counted in
``bad_files``) or raises ``BadImageError`` naming the file (``"fail"``).
"""

from __future__ import annotations

import csv
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from deit.data.config import DataConfig
from deit.data.images import BadImageError, DataError, decode_image, is_image_file

log = logging.getLogger("deit.data")
SPLITS: tuple[str, ...] = ("train", "val", "train_rest")
MAX_REPLACEMENT_TRIES = 100
_REPLACEMENT_STREAM = 7  # any fixed number: replacements then depend on the bad sample's index alone


class ImageDataset(Dataset, ABC):
    """Base: ``classes``, ``targets`` (one int per sample) and ``load(i)``; ``dataset[i]`` adds the bad-image
    policy around ``load``. The replacement for a bad sample is a pure function of its index (reproducible)."""

    def __init__(self, classes: list[str], targets: list[int], on_bad_image: str = "skip"):
        self.classes = list(classes)
        self.targets = list(targets)
        self.on_bad_image = on_bad_image
        self.bad_files: set[str] = set()  # errors (naming the file) met by this process; each worker has its own

    @abstractmethod
    def load(self, index: int) -> tuple[Image.Image, int]:
        """Sample ``index``; raises BadImageError for an unreadable file."""

    def describe(self, index: int) -> str:
        return f"sample {index}"

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        try:
            return self.load(index)
        except BadImageError as exc:
            if self.on_bad_image == "fail":
                raise
            return self._replace(index, exc)

    def _replace(self, index: int, exc: BadImageError) -> tuple[Image.Image, int]:
        rng = np.random.default_rng([_REPLACEMENT_STREAM, index])
        for _ in range(MAX_REPLACEMENT_TRIES):
            self.bad_files.add(str(exc))
            j = int(rng.integers(len(self)))
            try:
                img, label = self.load(j)
            except BadImageError as again:
                exc = again
                continue
            log.warning("skipped unreadable image (%s); used sample %d instead. %d bad file(s) seen so far "
                        "in this process. Run `deit data check` to list them all.", exc, j, len(self.bad_files))
            return img, label
        raise DataError(f"{MAX_REPLACEMENT_TRIES} unreadable images in a row (last: {exc}); "
                        "run `deit data check` on the data set")


class FileDataset(ImageDataset):
    """(path, label) pairs decoded with ``decode_image``."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], on_bad_image: str = "skip"):
        if not samples:
            raise DataError("the data set has no images")
        super().__init__(classes, [t for _, t in samples], on_bad_image)
        self.samples = samples

    def load(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        return decode_image(path), target

    def describe(self, index: int) -> str:
        return self.samples[index][0]


class SubsetDataset(ImageDataset):
    """Some indices of a data set; same classes; bad samples replaced from within the subset."""

    def __init__(self, base: ImageDataset, indices: Sequence[int]):
        self.base = base
        self.indices = [int(i) for i in indices]
        if not self.indices:
            raise DataError("the split has no images")
        super().__init__(base.classes, [base.targets[i] for i in self.indices], base.on_bad_image)

    def load(self, index: int) -> tuple[Image.Image, int]:
        return self.base.load(self.indices[index])

    def describe(self, index: int) -> str:
        return self.base.describe(self.indices[index])


# ---- stratified, seeded subsets
def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: per class, ``round(n * val_fraction)`` (at least 1 if n >= 2) go to val."""
    targets = np.asarray(targets)
    train, val = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        idx = idx[np.random.default_rng([seed, int(c)]).permutation(len(idx))]
        n_val = max(1, int(round(len(idx) * val_fraction))) if len(idx) >= 2 else 0
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return sorted(train), sorted(val)


def per_class_subset(targets: Sequence[int], per_class: int, seed: int) -> tuple[list[int], list[int]]:
    """(kept, rest): ``per_class`` seeded picks of each class (all of a smaller class), and the others."""
    targets = np.asarray(targets)
    kept = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        if len(idx) < per_class:
            log.warning("class %d has %d training images, fewer than train_per_class=%d: keeping all",
                        int(c), len(idx), per_class)
        kept.extend(np.random.default_rng([seed, 1, int(c)]).permutation(idx)[:per_class].tolist())
    kept_set = set(kept)
    return sorted(kept), [i for i in range(len(targets)) if i not in kept_set]


# ---- imagefolder
@dataclass
class FolderScan:
    """What is in one ``CLASS/*.jpg`` folder: sorted classes, files per class, and oddities."""

    root: str
    classes: list[str]
    files: dict[str, list[str]]
    loose_files: list[str] = field(default_factory=list)  # images directly in root, outside any class

    @property
    def empty_classes(self) -> list[str]:
        return [c for c in self.classes if not self.files[c]]


def scan_folder(root: str | os.PathLike) -> FolderScan:
    root = str(root)
    if not os.path.isdir(root):
        raise DataError(f"{root} is not a folder")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.path for e in entries if e.is_file() and is_image_file(e.name)]
    files = {}
    for c in classes:
        found = []
        for dirpath, dirnames, fnames in sorted(os.walk(os.path.join(root, c), followlinks=True)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(os.path.join(dirpath, f) for f in sorted(fnames) if is_image_file(f))
        files[c] = found
    return FolderScan(root, classes, files, loose)


def imagefolder_layout(root: str | os.PathLike) -> dict[str, str] | None:
    """{"train": dir, "val": dir} when ROOT has train/ (and val/) sub-folders, else None (one folder)."""
    root = Path(root)
    if (root / "train").is_dir():
        return {"train": str(root / "train"), "val": str(root / "val")}
    return None


def _require_classes(scan: FolderScan) -> None:
    if not scan.classes:
        hint = f" ({len(scan.loose_files)} images lie directly in it)" if scan.loose_files else ""
        raise DataError(f"no class folders in {scan.root}{hint}: imagefolder expects ROOT/CLASS/*.jpg or "
                        "ROOT/{train,val}/CLASS/*.jpg")
    if scan.empty_classes:
        raise DataError(f"empty class folder(s) in {scan.root}: {scan.empty_classes[:10]} have no images "
                        "(remove them, or add images)")


def _samples(scan: FolderScan, class_index: dict[str, int]) -> list[tuple[str, int]]:
    return [(f, class_index[c]) for c in scan.classes for f in scan.files[c]]


def build_imagefolder(root: str, split: str, cfg: DataConfig) -> ImageDataset:
    layout = imagefolder_layout(root)
    if layout is None:
        scan = scan_folder(root)
        _require_classes(scan)
        full = FileDataset(_samples(scan, {c: i for i, c in enumerate(scan.classes)}), scan.classes,
                           cfg.on_bad_image)
        train_idx, val_idx = stratified_split(full.targets, cfg.val_fraction, cfg.split_seed)
        return SubsetDataset(full, val_idx if split == "val" else train_idx)
    train = scan_folder(layout["train"])
    _require_classes(train)
    class_index = {c: i for i, c in enumerate(train.classes)}
    if split != "val":
        return FileDataset(_samples(train, class_index), train.classes, cfg.on_bad_image)
    if not os.path.isdir(layout["val"]):
        raise DataError(f"{root} has train/ but no val/ folder")
    val = scan_folder(layout["val"])
    _require_classes(val)
    unknown = [c for c in val.classes if c not in class_index]
    if unknown:
        raise DataError(f"val class(es) {unknown[:10]} have no folder in train/: the model could never "
                        "predict them (check the folder names)")
    return FileDataset(_samples(val, class_index), train.classes, cfg.on_bad_image)


# ---- csv
def read_csv_rows(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, label) rows of a csv file, paths made absolute relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"csv file {path} does not exist")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{n}: expected 'path,label', got {row!r}")
            p, label = row[0].strip(), row[1].strip()
            if n == 1 and p.lower() in ("path", "file", "filename", "image") and not is_image_file(p):
                continue  # header
            rows.append((str(path.parent / p), label))
    if not rows:
        raise DataError(f"csv file {path} has no rows")
    return rows


def csv_classes(train_rows, other_rows=()) -> tuple[list[str], dict[str, int]]:
    """Class names and the label -> index map: integer labels index directly, names are sorted."""
    labels = [lab for _, lab in train_rows]
    if all(lab.lstrip("-").isdigit() for lab in labels + [lab for _, lab in other_rows]):
        values = [int(lab) for lab in labels + [lab for _, lab in other_rows]]
        if min(values) < 0:
            raise DataError(f"integer labels must be >= 0, found {min(values)}")
        classes = [str(i) for i in range(max(values) + 1)]
        return classes, {lab: int(lab) for lab in {lab for _, lab in list(train_rows) + list(other_rows)}}
    classes = sorted(set(labels))
    return classes, {c: i for i, c in enumerate(classes)}


def csv_files(root: str) -> dict[str, str] | None:
    """{"train": file, "val": file} for a folder with train.csv, or None for a single csv file."""
    if os.path.isdir(root):
        if not os.path.isfile(os.path.join(root, "train.csv")):
            raise DataError(f"csv data set: {root} is a folder without train.csv (give train.csv and val.csv "
                            "in it, or the path of one csv file to split by val_fraction)")
        return {"train": os.path.join(root, "train.csv"), "val": os.path.join(root, "val.csv")}
    return None


def build_csv(root: str, split: str, cfg: DataConfig) -> ImageDataset:
    files = csv_files(root)
    if files is None:
        rows = read_csv_rows(root)
        classes, index = csv_classes(rows)
        full = FileDataset([(p, index[lab]) for p, lab in rows], classes, cfg.on_bad_image)
        train_idx, val_idx = stratified_split(full.targets, cfg.val_fraction, cfg.split_seed)
        return SubsetDataset(full, val_idx if split == "val" else train_idx)
    train_rows = read_csv_rows(files["train"])
    val_rows = read_csv_rows(files["val"]) if split == "val" else []
    classes, index = csv_classes(train_rows, val_rows)
    rows = val_rows if split == "val" else train_rows
    unknown = sorted({lab for _, lab in rows if lab not in index})
    if unknown:
        raise DataError(f"{files['val']}: label(s) {unknown[:10]} never appear in train.csv")
    return FileDataset([(p, index[lab]) for p, lab in rows], classes, cfg.on_bad_image)


def build_dataset(cfg: DataConfig, split: str = "train") -> ImageDataset:
    """The data set ``cfg`` names, for ``split`` in {"train", "val", "train_rest"}."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train_rest" and cfg.train_per_class is None:
        raise ValueError("split 'train_rest' is what train_per_class leaves out: set train_per_class")
    base_split = "val" if split == "val" else "train"
    if cfg.dataset in ("imagefolder", "csv", "cifar10", "cifar100") and not os.path.exists(cfg.root):
        raise FileNotFoundError(f"data root {cfg.root} does not exist")
    if cfg.dataset == "imagefolder":
        ds = build_imagefolder(cfg.root, base_split, cfg)
    elif cfg.dataset == "csv":
        ds = build_csv(cfg.root, base_split, cfg)
    else:
        from deit.data import builtin

        ds = builtin.build(cfg, base_split)
    if len(ds) == 0:
        raise DataError(f"the {split} split of {cfg.dataset} is empty")
    if base_split == "train" and cfg.train_per_class is not None:
        kept, rest = per_class_subset(ds.targets, cfg.train_per_class, cfg.split_seed)
        ds = SubsetDataset(ds, kept if split == "train" else rest)
    return ds
