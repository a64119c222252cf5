"""The registry of data sets: every name ``data.dataset`` may take, and what each data set is.

Code that needs to know something about a data set asks its :class:`DatasetSpec` (``dataset_spec(name)``:
whether it reads files under ``data.root``, whether it can be downloaded, how a path holding it is recognised,
how ``deit data check`` checks it) instead of comparing names; outside ``deit.data`` nothing branches on a data
set's name (``tests/test_architecture.py`` checks it).

The built-in names are the ``DatasetName`` Literal (``BUILTIN_DATASETS``); ``deit.data.datasets`` registers them
when ``deit.data`` is imported. A data set of your own is a builder ``(DataConfig, split) -> ImageDataset``
(split "train" or "val") registered under a name, which configs then use like a built-in one::

    from deit.data import ImageDataset, register_dataset

    register_dataset("stripes", lambda cfg, split: Stripes(split, size=cfg.img_size))
    cfg = load_config("digits-deit-distilled", ["data.dataset=stripes"])   # deit.train.load_config

Data set objects can also be given to a run directly: ``deit.train.train(cfg, datasets=(train_set, val_set))``
(the config then records ``data.dataset: given`` and the sets' fingerprint).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from deit.data.base import ImageDataset

# The built-in data sets (see deit.data.datasets): in memory (digits, synthetic), files under data.root
# (imagefolder, csv, cifar10, cifar100; the CIFAR archives downloaded when no root is given), and "given": the data
# set objects passed to deit.train.train(cfg, datasets=...), which a config records but cannot rebuild.
DatasetName = Literal["digits", "synthetic", "csv", "cifar10", "cifar100", "imagefolder", "given"]
BUILTIN_DATASETS: tuple[str, ...] = get_args(DatasetName)

# (the DataConfig, "train" or "val") -> that split. The config is typed Any here: deit.data.config validates names
# against this registry, so this module cannot import it.
Builder = Callable[[Any, str], ImageDataset]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class DatasetSpec:
    """One registered data set: how it is built, and the facts the rest of deit asks about it."""

    name: str
    build: Builder
    description: str = ""
    # Reads files under data.root (required unless ``download`` fetches them).
    reads_root: bool = False
    # Fetches the official files once (checked) and returns the root to read: used when data.root is not given.
    download: Callable[[], Path] | None = None
    # Recognises a path that holds this data set (``deit.data.formats.detect_format`` asks every detector in
    # registration order; the first that says yes names the format).
    detect: Callable[[str], bool] | None = None
    # What a root of this data set holds, in words (the line that says which format data.root was found to be).
    describe_root: Callable[[str], str] | None = None
    # ``deit data check``: fills a ``deit.data.check.CheckReport`` for a path, returns the image files to decode.
    check: Callable[[Any, str], list[str]] | None = None

    @property
    def downloadable(self) -> bool:
        return self.download is not None

    @property
    def needs_root(self) -> bool:
        """A config naming it must give data.root."""
        return self.reads_root and self.download is None


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, build: Builder, *, replace: bool = False, **facts: Any) -> DatasetSpec:
    """Make ``data.dataset=<name>`` build its splits with ``build(cfg, split)`` (split "train" or "val"; the
    "train_rest" of ``train_per_class`` and the checks are added by ``deit.data.build_dataset``). ``facts`` are the
    other fields of :class:`DatasetSpec` (e.g. ``reads_root=True``, ``description="..."``). Registering a taken
    name needs ``replace=True``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"a data set name is letters, digits, '_', '.' or '-' (as written in a config), got {name!r}")
    if not callable(build):
        raise ValueError(f"the builder of data set {name!r} must be callable as build(cfg, split), got {build!r}")
    if name in _DATASETS and not replace:
        raise ValueError(f"data set {name!r} is registered already (pass replace=True to redefine it)")
    spec = DatasetSpec(name, build, **facts)
    _DATASETS[name] = spec
    return spec


def dataset_names() -> tuple[str, ...]:
    """Every registered name: the built-ins, then the user's, in registration order."""
    return tuple(_DATASETS)


def dataset_specs() -> tuple[DatasetSpec, ...]:
    return tuple(_DATASETS.values())


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered data set; a ValueError listing the registered names for any other."""
    spec = _DATASETS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"dataset must be one of {', '.join(_DATASETS)}, got {name!r} (a data set of your own: "
                         "deit.data.register_dataset(name, builder))")
    return spec


__all__ = [
    "BUILTIN_DATASETS",
    "Builder",
    "DatasetName",
    "DatasetSpec",
    "dataset_names",
    "dataset_spec",
    "dataset_specs",
    "register_dataset",
]
