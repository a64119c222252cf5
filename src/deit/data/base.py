"""The data set base class (``(PIL RGB image, int label)`` samples with ``.classes`` and ``.targets``), its
bad-image policy, subsets, and the seeded stratified splits every file-based data set uses.

An unreadable image found while loading is replaced by another sample of the same split (``on_bad_image="skip"``:
counted in ``bad_files``; the loader collects them, from every worker, for one summary per epoch) or raises
``BadImageError`` naming the file (``"fail"``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from deit.data.images import BadImageError, DataError, decode_image

log = logging.getLogger("deit.data")
MAX_REPLACEMENT_TRIES = 100
_REPLACEMENT_STREAM = 7  # any fixed number: replacements then depend on the bad sample's index alone


class ImageDataset(Dataset, ABC):
    """Base: ``classes``, ``targets`` (one int per sample) and ``load(i)``; ``dataset[i]`` adds the bad-image
    policy around ``load``. The replacement for a bad sample is a pure function of its index (reproducible).

    A data set of your own: call ``super().__init__(classes, targets)``, implement ``load(i) -> (PIL RGB image,
    label)`` (raise ``BadImageError`` for an unreadable sample), and let ``describe(i)`` name sample i (its file,
    its seed): the default ``fingerprint()`` hashes the classes, the labels and these names, and a run given the data
    set (``deit.train.train(cfg, datasets=...)``) or a teacher-output cache recognises its data by it."""

    def __init__(self, classes: list[str], targets: list[int], on_bad_image: str = "skip"):
        self.classes = list(classes)
        self.targets = list(targets)
        self.on_bad_image = on_bad_image
        self.bad_files: set[str] = set()  # errors (naming the file) met by this process; each worker has its own
        # A line worth telling the user about how the split was found (e.g. which folder is the held-out split).
        self.note: str | None = None

    @abstractmethod
    def load(self, index: int) -> tuple[Image.Image, int]:
        """Sample ``index``; raises BadImageError for an unreadable file."""

    def describe(self, index: int) -> str:
        return f"sample {index}"

    def fingerprint(self) -> str:
        """A digest of what the data set holds (classes, labels, and each sample's identity), independent of
        where it lies on disk: a teacher-output cache records it to recognise its data."""
        h = hashlib.sha256()
        h.update("\n".join(self.classes).encode())
        h.update(np.asarray(self.targets, dtype=np.int64).tobytes())
        for part in self._identity():
            h.update(part)
        return h.hexdigest()[:16]

    def _identity(self):
        """The bytes that identify the samples, in order (subclasses that hold files or arrays refine it)."""
        yield "\n".join(self.describe(i) for i in range(len(self))).encode()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        img, label, _ = self.fetch(index)
        return img, label

    def fetch(self, index: int) -> tuple[Image.Image, int, list[str]]:
        """Sample ``index`` under the bad-image policy, with the errors (naming the files) of the unreadable
        images replaced on the way; the loader gathers them into one summary per epoch."""
        try:
            img, label = self.load(index)
        except BadImageError as exc:
            if self.on_bad_image == "fail":
                raise
            return self._replace(index, exc)
        return img, label, []

    def _replace(self, index: int, exc: BadImageError) -> tuple[Image.Image, int, list[str]]:
        rng = np.random.default_rng([_REPLACEMENT_STREAM, index])
        errors = []
        for _ in range(MAX_REPLACEMENT_TRIES):
            errors.append(str(exc))
            self.bad_files.add(str(exc))
            j = int(rng.integers(len(self)))
            try:
                img, label = self.load(j)
            except BadImageError as again:
                exc = again
                continue
            log.debug("replaced unreadable image (%s) by sample %d", exc, j)
            return img, label, errors
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

    def _identity(self):
        paths = [p for p, _ in self.samples]
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        yield "\n".join(os.path.relpath(p, root) for p in paths).encode()


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

    def _identity(self):
        yield from self.base._identity()
        yield np.asarray(self.indices, dtype=np.int64).tobytes()


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


def split_problems(targets: Sequence[int], classes: Sequence[str], val_fraction: float, seed: int,
                   source: str) -> dict[str, str]:
    """{split: why it is empty} for the ``stratified_split`` of ``targets`` (nothing when both splits have images);
    each message names the cause and the fix."""
    train, val = stratified_split(targets, val_fraction, seed)
    problems: dict[str, str] = {}
    if not val:
        smallest = min(np.bincount(np.asarray(targets), minlength=len(classes))[np.unique(targets)])
        problems["val"] = (
            f"the val split of {source} would be empty: data.val_fraction={val_fraction:g} holds out part of each "
            f"class that has 2 or more images, and every class has {smallest} image(s). Add images (at least 2 per "
            "class), or give held-out images their own folder (ROOT/train/CLASS/ and ROOT/val/CLASS/)"
        )
    if not train:
        problems["train"] = (f"the train split of {source} would be empty: data.val_fraction={val_fraction:g} "
                             "holds out every image; lower data.val_fraction")
    return problems


def fraction_split(full: ImageDataset, split: str, val_fraction: float, seed: int, source: str) -> SubsetDataset:
    """The ``split`` ("train" or "val") of one stratified, seeded split of ``full`` by ``val_fraction``."""
    problem = split_problems(full.targets, full.classes, val_fraction, seed, source).get(split)
    if problem:
        raise DataError(problem)
    train, val = stratified_split(full.targets, val_fraction, seed)
    return SubsetDataset(full, val if split == "val" else train)


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


__all__ = [
    "FileDataset",
    "ImageDataset",
    "SubsetDataset",
    "fraction_split",
    "per_class_subset",
    "split_problems",
    "stratified_split",
]
