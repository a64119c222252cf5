"""Helpers for the data tests: tiny image folders and fake CIFAR archives."""

import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(40, 30), color=(200, 30, 30), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def make_imagefolder(root: Path, layout: dict[str, dict[str, int]], size=(40, 30)) -> Path:
    """layout: {"train": {"cat": 3, "dog": 2}, "val": {...}}; use "" as split for a one-folder layout."""
    for split, classes in layout.items():
        for k, (cls, n) in enumerate(classes.items()):
            for i in range(n):
                write_image(root / split / cls / f"{i}.png", size, (20 * k, 5 * i, 100))
    return root


def make_cifar(root: Path, kind: str = "cifar10", n_per_batch: int = 6, archive: bool = True) -> Path:
    """A tiny fake of the CIFAR python-pickle release (same file names and keys)."""
    rng = np.random.default_rng(0)
    if kind == "cifar10":
        folder, batches, meta = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], \
            ("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        label_key, n_classes = b"labels", 10
    else:
        folder, batches, meta = "cifar-100-python", ["train", "test"], \
            ("meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                      b"coarse_label_names": [f"k{i}".encode() for i in range(20)]})
        label_key, n_classes = b"fine_labels", 100
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    for b in batches:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        entry = {b"data": data, label_key: [int(v) for v in rng.integers(0, n_classes, n_per_batch)],
                 b"batch_label": b.encode()}
        if kind == "cifar100":
            entry[b"coarse_labels"] = [0] * n_per_batch
        (d / b).write_bytes(pickle.dumps(entry, protocol=2))
    (d / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    if not archive:
        return d
    tar_path = root / f"{folder.replace('-batches', '')}.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(d, arcname=folder)
    return tar_path
