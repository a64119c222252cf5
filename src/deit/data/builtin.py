"""Built-in data sets: scikit-learn digits, deterministic synthetic images, CIFAR-10/100 from local archives.

- digits: ``sklearn.datasets.load_digits`` (1,797 8x8 images, shipped with scikit-learn). Split fixed as in the
  digits pilot: stratified, 1,200 train / 597 val, ``random_state=0``. Pixels / 16, upsampled to
  ``cfg.img_size`` with bilinear interpolation (``align_corners=False``), rounded to 8 bits, grey as RGB.
- synthetic: ``synthetic_train`` / ``synthetic_val`` images of ``synthetic_classes`` classes (label = index mod
  classes), each a pure function of (split_seed, split, index): a class-specific smooth colour pattern plus
  per-sample noise, so a model can learn it. Fast and needs no files.
- cifar10 / cifar100: the python-pickle release (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) or its
  extracted folder, from ``cfg.root`` (without a root: the official archive, downloaded once into a cache
  directory and checked against its md5, ``deit.data.download``). train = the training batches, val = the test batch;
  cifar100 uses the 100 fine labels. The pickles are read with an unpickler that only admits numpy arrays.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import tarfile
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from deit.data.base import ImageDataset
from deit.data.config import DataConfig
from deit.data.images import DataError

DIGITS_TRAIN, DIGITS_VAL = 1200, 597


class ArrayDataset(ImageDataset):
    """uint8 images held in memory: (N, H, W, 3) RGB, or (N, H, W) grey returned as RGB."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], classes: list[str]):
        super().__init__(classes, [int(t) for t in targets])
        self.images = images

    def _identity(self):
        yield np.ascontiguousarray(self.images).tobytes()

    def load(self, index: int) -> tuple[Image.Image, int]:
        img = Image.fromarray(self.images[index])
        return (img if img.mode == "RGB" else img.convert("RGB")), self.targets[index]


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, val images, val labels) of the fixed digits split; images 8x8 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    tr, va = train_test_split(idx, train_size=DIGITS_TRAIN, test_size=DIGITS_VAL, stratify=d.target,
                              random_state=0)
    x = d.images.astype(np.float32) / 16.0
    return x[tr], d.target[tr], x[va], d.target[va]


def upsample_gray(x: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) floats in [0, 1] -> (N, size, size) uint8, bilinear."""
    t = F.interpolate(torch.from_numpy(x)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return (t[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def build_digits(cfg: DataConfig, split: str) -> ArrayDataset:
    xtr, ytr, xva, yva = digits_split()
    x, y = (xtr, ytr) if split == "train" else (xva, yva)
    return ArrayDataset(upsample_gray(x, cfg.img_size), y, [str(i) for i in range(10)])


class SyntheticDataset(ImageDataset):
    """Deterministic random images rendered on demand; see the module docstring."""

    def __init__(self, num_items: int, num_classes: int, img_size: int, seed: int, split: str):
        super().__init__([f"class_{i}" for i in range(num_classes)],
                         [i % num_classes for i in range(num_items)])
        self.img_size, self.seed = img_size, seed
        self.split_id = 0 if split == "train" else 1
        # One smooth 4x4 colour pattern per class, shared by both splits.
        self.patterns = np.random.default_rng([seed, 99]).uniform(0.15, 0.85, (num_classes, 4, 4, 3))

    def load(self, index: int) -> tuple[Image.Image, int]:
        label = self.targets[index]
        rng = np.random.default_rng([self.seed, self.split_id, index])
        coarse = self.patterns[label] + rng.normal(0.0, 0.12, (4, 4, 3))
        t = torch.from_numpy(coarse.astype(np.float32)).permute(2, 0, 1)[None]
        img = F.interpolate(t, size=(self.img_size,) * 2, mode="bilinear", align_corners=False)[0]
        img = img.permute(1, 2, 0).numpy() + rng.normal(0.0, 0.04, (self.img_size, self.img_size, 3))
        return Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)), label


def build_synthetic(cfg: DataConfig, split: str) -> SyntheticDataset:
    n = cfg.synthetic_train if split == "train" else cfg.synthetic_val
    return SyntheticDataset(n, cfg.synthetic_classes, cfg.img_size, cfg.split_seed, split)


# ---- CIFAR
CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    val=["test_batch"], meta="batches.meta", names=b"label_names", labels=b"labels"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], val=["test"], meta="meta",
                     names=b"fine_label_names", labels=b"fine_labels"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what CIFAR's pickles hold (dicts, lists, bytes, numpy arrays): no arbitrary code.
    (``_codecs.encode`` is how Python 3 writes bytes at protocol 2: it only turns a str into bytes.)"""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _unpickle(data: bytes) -> dict:
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"not a CIFAR python-pickle batch: {exc}") from exc


def read_cifar(root: str, kind: str, split: str) -> dict[str, dict]:
    """{file name: unpickled dict} for the meta file and the split's batches, from the archive or folder."""
    spec = CIFAR[kind]
    folder = spec["folder"]
    need = [spec["meta"], *spec["train"], *spec["val"]]
    wanted = [spec["meta"], *spec[split]]

    def require(present) -> None:
        missing = [n for n in need if n not in present]
        if missing:
            raise DataError(f"{root}: CIFAR files {missing} not found (expected {folder}/ with {need})")

    if os.path.isfile(root):
        if not tarfile.is_tarfile(root):
            raise DataError(f"{root} is not a tar archive (expected {folder.replace('-batches', '')}.tar.gz)")
        with tarfile.open(root) as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers()
                       if m.isfile() and os.path.basename(os.path.dirname(m.name)) == folder}
            require(members)
            return {n: _unpickle(tar.extractfile(members[n]).read()) for n in wanted}
    base = root if os.path.exists(os.path.join(root, spec["meta"])) else os.path.join(root, folder)
    require(os.listdir(base) if os.path.isdir(base) else [])
    out = {}
    for n in wanted:
        with open(os.path.join(base, n), "rb") as f:
            out[n] = _unpickle(f.read())
    return out


def build_cifar(cfg: DataConfig, split: str) -> ArrayDataset:
    spec = CIFAR[cfg.dataset]
    files = read_cifar(cfg.root, cfg.dataset, split)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in files[spec["meta"]][spec["names"]]]
    xs, ys = [], []
    for batch in spec[split]:
        d = files[batch]
        data = np.asarray(d[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{cfg.root}: {batch} has data of shape {data.shape}, expected (N, 3072)")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.extend(int(v) for v in d[spec["labels"]])
    if max(ys) >= len(names):
        raise DataError(f"{cfg.root}: label {max(ys)} but only {len(names)} class names")
    return ArrayDataset(np.ascontiguousarray(np.concatenate(xs)), ys, names)
