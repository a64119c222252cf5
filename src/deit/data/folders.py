"""Data sets in files: image folders (``ROOT/{train,val}/CLASS/*.jpg`` or one ``ROOT/CLASS/*.jpg`` split by
``val_fraction``) and csv lists (``path,label`` rows), with the layout checks ``deit data check`` reports.

- imagefolder: the held-out split is ``val/``, else ``validation/``, else ``test/`` (the data set says which it
  took). Classes are the sub-folder names sorted as torchvision sorts them, so index k means the same class
  as in torchvision/timm; the val split uses the train split's indices. Files are found recursively inside each
  class folder (symlinks followed) and kept if their extension is one of ``IMG_EXTENSIONS``; folders whose name
  starts with '.' (``.ipynb_checkpoints``, ...) are never classes.
- csv: ``ROOT/train.csv`` and ``ROOT/val.csv``, or one ``FILE.csv`` split by ``val_fraction``; rows ``path,label``
  (an optional header row ``path,label``), paths relative to the csv's folder. Labels all integers: class k is
  named "k" and there are max+1 classes; otherwise labels are names, sorted, taken from the train rows.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from deit.data.base import FileDataset, ImageDataset, fraction_split
from deit.data.config import DataConfig
from deit.data.images import DataError, is_image_file


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


HELD_OUT_FOLDERS: tuple[str, ...] = ("val", "validation", "test")  # in order of preference


@dataclass(frozen=True)
class FolderLayout:
    """Where an imagefolder's splits are: ``ROOT/train`` and a held-out folder (``val/``, else ``validation/``,
    else ``test/``), or one folder of class folders split by ``val_fraction`` (``split_by_fraction``)."""

    root: str
    train: str
    held_out: str | None  # the folder of the val split; None with train/: missing (a problem)
    split_by_fraction: bool = False

    @property
    def held_out_name(self) -> str:
        return os.path.basename(self.held_out) if self.held_out else "val"

    def describe(self) -> str:
        if self.split_by_fraction:
            return "one folder of class folders; val_fraction of each class held out at training time"
        if self.held_out is None:
            return "train/ without a held-out folder"
        return f"train/ and {self.held_out_name}/"

    @property
    def note(self) -> str | None:
        """What to tell the user when the held-out split is not the usual val/."""
        if self.held_out is None or self.held_out_name == "val":
            return None
        return f"{self.root} has no val/ folder: using {self.held_out_name}/ as the held-out (val) split"


def imagefolder_layout(root: str | os.PathLike) -> FolderLayout:
    root = str(root)
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        split = next((n for n in HELD_OUT_FOLDERS if os.path.isdir(os.path.join(root, n))), None)
        if split is not None:  # not a class named "val": the training split is missing or misnamed
            raise DataError(f"{root} has {split}/ but no train/ folder: put the training images in "
                            f"{os.path.join(root, 'train', 'CLASS')}/")
        return FolderLayout(root, root, None, split_by_fraction=True)
    held_out = next((os.path.join(root, n) for n in HELD_OUT_FOLDERS if os.path.isdir(os.path.join(root, n))), None)
    return FolderLayout(root, train, held_out)


def missing_held_out(layout: FolderLayout) -> str:
    return (f"{layout.root} has train/ but no val/, validation/ or test/ folder: put the held-out images in "
            f"{os.path.join(layout.root, 'val', 'CLASS')}/, or set data.root={layout.train} to hold out "
            "data.val_fraction of each class of train/")


def scan_problems(scan: FolderScan) -> list[str]:
    """What makes one folder of class folders unusable: no class folders, or class folders without images."""
    if not scan.classes:
        hint = f" ({len(scan.loose_files)} images lie directly in it)" if scan.loose_files else ""
        return [f"no class folders in {scan.root}{hint}: imagefolder expects ROOT/CLASS/*.jpg or "
                "ROOT/{train,val}/CLASS/*.jpg"]
    if scan.empty_classes:
        return [f"empty class folder(s) in {scan.root}: {scan.empty_classes[:10]} have no images "
                "(remove them, or add images)"]
    return []


def unknown_held_out_classes(train: FolderScan, held_out: FolderScan, name: str) -> list[str]:
    unknown = [c for c in held_out.classes if c not in set(train.classes)]
    if not unknown:
        return []
    return [f"{name} class(es) missing from train: {unknown[:10]} (no folder in train/: the model could never "
            "predict them; check the folder names)"]


def _require(problems: list[str]) -> None:
    if problems:
        raise DataError("; ".join(problems))


def _samples(scan: FolderScan, class_index: dict[str, int]) -> list[tuple[str, int]]:
    return [(f, class_index[c]) for c in scan.classes for f in scan.files[c]]


def build_imagefolder(root: str, split: str, cfg: DataConfig) -> ImageDataset:
    layout = imagefolder_layout(root)
    train = scan_folder(layout.train)
    _require(scan_problems(train))
    class_index = {c: i for i, c in enumerate(train.classes)}
    if layout.split_by_fraction:
        full = FileDataset(_samples(train, class_index), train.classes, cfg.on_bad_image)
        return fraction_split(full, split, cfg.val_fraction, cfg.split_seed, root)
    if split != "val":
        ds = FileDataset(_samples(train, class_index), train.classes, cfg.on_bad_image)
    else:
        if layout.held_out is None:
            raise DataError(missing_held_out(layout))
        val = scan_folder(layout.held_out)
        _require(scan_problems(val) + unknown_held_out_classes(train, val, layout.held_out_name))
        ds = FileDataset(_samples(val, class_index), train.classes, cfg.on_bad_image)
    ds.note = layout.note
    return ds


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
        return fraction_split(full, split, cfg.val_fraction, cfg.split_seed, root)
    train_rows = read_csv_rows(files["train"])
    val_rows = read_csv_rows(files["val"]) if split == "val" else []
    classes, index = csv_classes(train_rows, val_rows)
    rows = val_rows if split == "val" else train_rows
    unknown = sorted({lab for _, lab in rows if lab not in index})
    if unknown:
        raise DataError(f"{files['val']}: label(s) {unknown[:10]} never appear in train.csv")
    return FileDataset([(p, index[lab]) for p, lab in rows], classes, cfg.on_bad_image)


__all__ = [
    "HELD_OUT_FOLDERS",
    "FolderLayout",
    "FolderScan",
    "build_csv",
    "build_imagefolder",
    "csv_classes",
    "csv_files",
    "imagefolder_layout",
    "read_csv_rows",
    "scan_folder",
    "scan_problems",
]
