"""``check_dataset``: what ``deit data check`` reports about a data set before any training.

Classes, images per class and split, unreadable files (every image is fully decoded unless ``decode=False``),
empty class folders, val classes missing from train (a problem) and train classes missing from val (a warning),
images lying outside any class folder (a warning). ``report.ok`` is False when there is any problem.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from deit.data.base import split_problems, stratified_split
from deit.data.config import DataConfig
from deit.data.folders import (
    csv_classes,
    csv_files,
    imagefolder_layout,
    missing_held_out,
    read_csv_rows,
    scan_folder,
    scan_problems,
    unknown_held_out_classes,
)
from deit.data.formats import detect_format
from deit.data.images import BadImageError, DataError, decode_image
from deit.data.registry import dataset_spec, dataset_specs


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
    # The split sizes training will use (holding out val_fraction of each class in a one-folder layout).
    splits: dict[str, int] = field(default_factory=dict)
    val_fraction: float = 0.1
    split_seed: int = 0

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
        if self.splits:
            held = f" (val_fraction {self.val_fraction:g} of each class held out)" if "all" in self.counts else ""
            sizes = ", ".join(f"{k} {v} images" for k, v in self.splits.items())
            lines.append(f"training will use: {sizes}{held}")
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


def _decode_errors(files: list[str], workers: int) -> list[str]:
    def one(path: str) -> str | None:
        try:
            decode_image(path)
        except BadImageError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [e for e in pool.map(one, files, chunksize=16) if e]


def check_imagefolder(r: CheckReport, path: str) -> list[str]:
    layout = imagefolder_layout(path)
    r.layout = layout.describe()
    train = scan_folder(layout.train)
    scans = {"all" if layout.split_by_fraction else "train": train}
    if layout.held_out is not None:
        scans[layout.held_out_name] = scan_folder(layout.held_out)
    elif not layout.split_by_fraction:
        r.problems.append(missing_held_out(layout))
    if layout.note:
        r.warnings.append(layout.note)
    for s in scans.values():
        r.problems.extend(scan_problems(s))
        if s.loose_files:
            r.warnings.append(f"{len(s.loose_files)} image(s) directly in {s.root}, outside any class folder, "
                              "are ignored")
    for split, s in scans.items():
        r.counts[split] = {c: len(s.files[c]) for c in s.classes}
    r.classes = list(train.classes)
    if layout.held_out is not None:
        held_out = scans[layout.held_out_name]
        r.problems.extend(unknown_held_out_classes(train, held_out, layout.held_out_name))
        train_only = [c for c in train.classes if c not in set(held_out.classes)]
        if train_only:
            r.warnings.append(f"train class(es) with no {layout.held_out_name} folder: {train_only}")
        r.splits = {"train": len(_files(train)), "val": len(_files(held_out))}
    elif layout.split_by_fraction and train.classes:
        targets = [i for i, c in enumerate(train.classes) for _ in train.files[c]]
        _fraction_splits(r, targets, path)
    return [f for s in scans.values() for f in _files(s)]


def _files(scan) -> list[str]:
    return [f for c in scan.classes for f in scan.files[c]]


def _fraction_splits(r: CheckReport, targets: list[int], source: str) -> None:
    """The sizes training will use when it holds out ``val_fraction`` of each class, and empty-split problems."""
    if not targets:
        return
    train_idx, val_idx = stratified_split(targets, r.val_fraction, r.split_seed)
    r.splits = {"train": len(train_idx), "val": len(val_idx)}
    r.problems.extend(split_problems(targets, r.classes, r.val_fraction, r.split_seed, source).values())
    kept = np.bincount(np.asarray(targets)[train_idx], minlength=len(r.classes)) if train_idx else None
    no_train = [c for i, c in enumerate(r.classes) if kept is not None and kept[i] == 0 and i in set(targets)]
    if no_train and val_idx:
        r.warnings.append(f"class(es) {no_train[:10]} keep no training image after holding out "
                          f"val_fraction={r.val_fraction:g}: add images or lower data.val_fraction")


def check_csv(r: CheckReport, path: str) -> list[str]:
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
    if "all" in splits:
        _fraction_splits(r, [index[lab] for _, lab in splits["all"]], path)
    elif "val" in splits:
        r.splits = {"train": len(splits["train"]), "val": len(splits["val"])}
    return [p for rows in splits.values() for p, _ in rows]


def check_cifar(r: CheckReport, path: str) -> list[str]:
    """Reads every image (the arrays of the batches) whole: nothing is left to decode."""
    from deit.data.builtin import build_cifar

    r.layout = "python-pickle archive" if os.path.isfile(path) else "extracted python-pickle folder"
    for split in ("train", "val"):
        ds = build_cifar(DataConfig(dataset=r.format, root=path), split)
        r.classes = ds.classes
        r.counts[split] = {ds.classes[k]: v for k, v in sorted(Counter(ds.targets).items())}
        r.splits[split] = len(ds)
    r.decoded = True
    return []


def checkable_formats() -> tuple[str, ...]:
    """The registered data sets ``deit data check`` can check (those with a checker)."""
    return tuple(spec.name for spec in dataset_specs() if spec.check is not None)


def check_dataset(path: str, fmt: str | None = None, decode: bool = True, workers: int = 8,
                  val_fraction: float = 0.1, split_seed: int = 0) -> CheckReport:
    """Check the data set at ``path``; ``val_fraction``/``split_seed`` as training will use them (one-folder and
    one-csv layouts hold that part of each class out for validation)."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    fmt = fmt or detect_format(path)
    if fmt not in checkable_formats():
        raise ValueError(f"format must be one of {checkable_formats()}, got {fmt!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    r = CheckReport(path=path, format=fmt, val_fraction=val_fraction, split_seed=split_seed)
    try:
        files = dataset_spec(fmt).check(r, path)
    except DataError as exc:
        r.problems.append(str(exc))
        return r
    if not any(sum(c.values()) for c in r.counts.values()) and not r.problems:
        r.problems.append("the data set has no images")
    if decode and files:
        r.unreadable = _decode_errors(files, workers)
        r.problems.extend(r.unreadable)
    r.decoded = r.decoded or decode
    return r
