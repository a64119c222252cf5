"""``check_dataset``: what ``deit data check`` reports about a data set before any training.

Classes, images per class and split, unreadable files (every image is fully decoded unless ``decode=False``),
empty class folders, val classes missing from train (a problem) and train classes missing from val (a warning),
images lying outside any class folder (a warning). ``report.ok`` is False when there is any problem.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from deit.data.config import DataConfig
from deit.data.datasets import csv_classes, csv_files, imagefolder_layout, read_csv_rows, scan_folder
from deit.data.images import BadImageError, DataError, decode_image

FORMATS: tuple[str, ...] = ("imagefolder", "csv", "cifar10", "cifar100")


@dataclass
class CheckReport:
    path: str
    format: str
    layout: str = ""
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    unreadable: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    decoded: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def format_text(self, per_class: bool | None = None, max_listed: int = 20) -> str:
        lines = [f"data set: {self.path}", f"format:   {self.format} ({self.layout})" if self.layout
                 else f"format:   {self.format}", f"classes:  {len(self.classes)}"]
        for split, counts in self.counts.items():
            n = sum(counts.values())
            per = sorted(counts.values())
            span = f" (per class: min {per[0]}, max {per[-1]})" if per else ""
            lines.append(f"{split + ':':<9} {n} images{span}")
        known = set(self.classes)
        rows = self.classes + sorted({c for counts in self.counts.values() for c in counts} - known)
        show = len(rows) <= 30 if per_class is None else per_class
        if show and rows:
            splits = list(self.counts)
            width = max(12, *(len(c) + 2 for c in rows))
            lines.append("images per class:")
            lines.append("  " + f"{'class':<{width}}" + "".join(f"{s:>8}" for s in splits))
            for c in rows:
                lines.append("  " + f"{c:<{width}}" + "".join(f"{self.counts[s].get(c, 0):>8}" for s in splits))
        if not self.decoded:
            lines.append("images were not decoded (--no-decode): unreadable files are not checked")
        for title, items in (("warnings", self.warnings), ("problems", self.problems)):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  - {m}" for m in items[:max_listed])
                if len(items) > max_listed:
                    lines.append(f"  ... and {len(items) - max_listed} more (--json lists them all)")
        lines.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def detect_format(path: str) -> str:
    if os.path.isfile(path):
        if path.lower().endswith(".csv"):
            return "csv"
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                names = tar.getnames()
            if any("cifar-10-batches-py" in n for n in names):
                return "cifar10"
            if any("cifar-100-python" in n for n in names):
                return "cifar100"
        raise DataError(f"{path}: cannot tell the format of this file; give --format")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist")
    entries = set(os.listdir(path))
    if "train.csv" in entries:
        return "csv"
    if "cifar-10-batches-py" in entries or "batches.meta" in entries:
        return "cifar10"
    if "cifar-100-python" in entries or {"meta", "train", "test"} <= entries:
        return "cifar100"
    return "imagefolder"


def _decode_errors(files: list[str], workers: int) -> list[str]:
    def one(path: str) -> str | None:
        try:
            decode_image(path)
        except BadImageError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [e for e in pool.map(one, files, chunksize=16) if e]


def _check_imagefolder(r: CheckReport, path: str) -> list[str]:
    layout = imagefolder_layout(path)
    if layout is None:
        r.layout = "one folder of class folders; split by val_fraction at training time"
        scans = {"all": scan_folder(path)}
    else:
        r.layout = "train/ and val/"
        scans = {"train": scan_folder(layout["train"])}
        if os.path.isdir(layout["val"]):
            scans["val"] = scan_folder(layout["val"])
        else:
            r.problems.append(f"{path} has train/ but no val/ folder")
    for split, s in scans.items():
        if not s.classes:
            r.problems.append(f"{s.root}: no class folders (expected {s.root}/CLASS/*.jpg)")
        for c in s.empty_classes:
            r.problems.append(f"empty class folder: {os.path.join(s.root, c)}")
        if s.loose_files:
            r.warnings.append(f"{len(s.loose_files)} image(s) directly in {s.root}, outside any class folder, "
                              "are ignored")
        r.counts[split] = {c: len(s.files[c]) for c in s.classes}
    first = next(iter(scans.values()))
    r.classes = list(first.classes)
    if "val" in scans:
        val_only = [c for c in scans["val"].classes if c not in set(first.classes)]
        if val_only:
            r.problems.append(f"val class(es) missing from train: {val_only}")
        train_only = [c for c in first.classes if c not in set(scans["val"].classes)]
        if train_only:
            r.warnings.append(f"train class(es) with no val folder: {train_only}")
    return [f for s in scans.values() for c in s.classes for f in s.files[c]]


def _check_csv(r: CheckReport, path: str) -> list[str]:
    files = csv_files(path)
    if files is None:
        r.layout = "one csv file; split by val_fraction at training time"
        splits = {"all": read_csv_rows(path)}
    else:
        r.layout = "train.csv and val.csv"
        splits = {"train": read_csv_rows(files["train"])}
        if os.path.isfile(files["val"]):
            splits["val"] = read_csv_rows(files["val"])
        else:
            r.problems.append(f"{path} has train.csv but no val.csv")
    first_rows = next(iter(splits.values()))
    r.classes, index = csv_classes(first_rows, splits.get("val", []))
    for split, rows in splits.items():
        r.counts[split] = dict(Counter(r.classes[index[lab]] for _, lab in rows if lab in index))
    if "val" in splits:
        unknown = sorted({lab for _, lab in splits["val"] if lab not in index})
        if unknown:
            r.problems.append(f"val label(s) missing from train.csv: {unknown}")
        missing = [c for c in r.classes if c in r.counts["train"] and c not in r.counts["val"]]
        if missing:
            r.warnings.append(f"train class(es) with no val rows: {missing}")
    empty = [c for c in r.classes if not any(r.counts[s].get(c) for s in r.counts)]
    if empty:
        r.warnings.append(f"integer labels leave class(es) {empty[:20]} with no images")
    return [p for rows in splits.values() for p, _ in rows]


def _check_cifar(r: CheckReport, path: str) -> list[str]:
    from deit.data.builtin import build_cifar

    r.layout = "python-pickle archive" if os.path.isfile(path) else "extracted python-pickle folder"
    for split in ("train", "val"):
        ds = build_cifar(DataConfig(dataset=r.format, root=path), split)
        r.classes = ds.classes
        r.counts[split] = {ds.classes[k]: v for k, v in sorted(Counter(ds.targets).items())}
    return []


def check_dataset(path: str, fmt: str | None = None, decode: bool = True, workers: int = 8) -> CheckReport:
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    r = CheckReport(path=path, format=fmt)
    try:
        files = {"imagefolder": _check_imagefolder, "csv": _check_csv}.get(fmt, _check_cifar)(r, path)
    except DataError as exc:
        r.problems.append(str(exc))
        return r
    if not any(sum(c.values()) for c in r.counts.values()) and not r.problems:
        r.problems.append("the data set has no images")
    if decode and files:
        r.unreadable = _decode_errors(files, workers)
        r.problems.extend(r.unreadable)
    r.decoded = decode or fmt.startswith("cifar")
    return r
