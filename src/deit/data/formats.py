"""What kind of data set a path is, and the ``DataConfig`` the command line's ``--data`` names.

``detect_format`` is the one place a path is recognised (``deit data check``, ``deit eval``, ``deit analyze``, and
``deit train`` when ``data.root`` is given: :func:`follow_root`). It asks the detector of every registered data
set in turn (``deit.data.registry``); the built-in ones, in that order: a ``.csv`` file or a folder with
``train.csv`` is csv; a CIFAR python archive (by its members) or its extracted folder is cifar10/cifar100; a folder
with sub-folders is an imagefolder. Anything else is refused with what it holds and the layouts that are read.
"""

from __future__ import annotations

import functools
import os
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from deit.data.config import DataConfig
from deit.data.folders import imagefolder_layout
from deit.data.images import DataError
from deit.data.registry import dataset_spec, dataset_specs
from deit.runtime.typedconfig import from_dict, parse_override

LAYOUTS = ("a CIFAR python archive (cifar-10-python.tar.gz, cifar-100-python.tar.gz) or its extracted folder; "
           "image folders ROOT/train/CLASS/*.jpg with ROOT/val/ (or validation/, test/) beside it, or one "
           "ROOT/CLASS/*.jpg; a csv list ROOT/train.csv with ROOT/val.csv, or one FILE.csv")


# ---- detectors and descriptions of the built-in formats (deit.data.datasets registers them)
def is_csv(path: str) -> bool:
    """A ``.csv`` file, or a folder with ``train.csv``."""
    if os.path.isfile(path):
        return path.lower().endswith(".csv")
    return os.path.isfile(os.path.join(path, "train.csv"))


@functools.lru_cache(maxsize=4)
def _tar_members(path: str, size: int, mtime: float) -> tuple[str, ...]:
    """The member names of a tar archive (read once per version of the file: listing a .tar.gz decompresses it)."""
    if not tarfile.is_tarfile(path):
        return ()
    with tarfile.open(path) as tar:
        return tuple(tar.getnames())


def cifar_detector(folder: str, marker_files: frozenset[str]) -> Callable[[str], bool]:
    """A detector of a CIFAR release: an archive with ``folder`` inside, that folder, or a folder holding it or
    ``marker_files``."""

    def detect(path: str) -> bool:
        if os.path.isfile(path):
            st = os.stat(path)
            return any(folder in name for name in _tar_members(path, st.st_size, st.st_mtime))
        entries = {e.name: e for e in os.scandir(path)}
        files = {n for n, e in entries.items() if e.is_file()}
        return folder in entries or marker_files <= files

    return detect


def is_imagefolder(path: str) -> bool:
    """A folder with sub-folders (classes, or train/ and val/): the detector asked last."""
    return os.path.isdir(path) and any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(path))


def describe_imagefolder(path: str) -> str:
    return f"image folders ({imagefolder_layout(path).describe()})"


def describe_cifar(title: str) -> Callable[[str], str]:
    return lambda path: f"the {title} python {'archive' if os.path.isfile(path) else 'folder'}"


# ---- what a path holds
def _no_format(path: str, entries: list[os.DirEntry]) -> DataError:
    """The error for a folder that holds no data set: what is in it, and the layouts that are read."""
    kinds = Counter(os.path.splitext(e.name)[1].lower() or "extension-less" for e in entries if e.is_file())
    found = ", ".join(f"{n} {ext} file{'s' if n > 1 else ''}" for ext, n in kinds.most_common(5))
    found = f"it has {found} and no folders" if found else "it is empty"
    roots = [e.name for e in entries if e.is_file() and e.name.lower().endswith((".csv", ".tar.gz", ".tgz", ".tar"))]
    hint = f"; did you mean {os.path.join(path, roots[0])}?" if roots else ""
    return DataError(f"{path} holds no data set ({found}{hint}); the layouts read are {LAYOUTS}")


def detect_format(path: str | os.PathLike) -> str:
    """The registered data set a path holds (the first detector, in registration order, that recognises it: csv,
    cifar10, cifar100, imagefolder); a DataError for a path that holds no data set."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    for spec in dataset_specs():
        if spec.detect is not None and spec.detect(path):
            return spec.name
    if os.path.isfile(path):
        raise DataError(f"{path}: cannot tell the format of this file; the layouts read are {LAYOUTS}")
    raise _no_format(path, [e for e in os.scandir(path) if not e.name.startswith(".")])


def describe_root(path: str, fmt: str) -> str:
    """What the data root holds, in words (for the line that says which format was found)."""
    describe = dataset_spec(fmt).describe_root
    return describe(path) if describe is not None else f"a {fmt} data set"


def check_root(path: str) -> None:
    """A data root must exist and be readable (a folder: listable too)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.root {path} does not exist: give the folder or archive the data is in")
    mode = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
    if not os.access(path, mode):
        raise PermissionError(f"data.root {path} is not readable by this user: fix its permissions "
                              f"(chmod -R a+rX {path}) or copy the data where you can read it")


def follow_root(cfg: DataConfig) -> tuple[DataConfig, str | None]:
    """``cfg`` reading its ``root`` in the format found there (whatever built-in data set the config named), and
    the line that says which; (``cfg``, None) without a root, or for a data set that reads its root in a format of
    its own (registered with ``reads_root`` and no detector). Raises for a root that is missing, unreadable, or
    holds no data set."""
    if not cfg.root:
        return cfg, None
    check_root(cfg.root)
    spec = dataset_spec(cfg.dataset)
    if spec.reads_root and spec.detect is None:
        return cfg, None
    found = detect_format(cfg.root)
    line = f"data: {cfg.root} holds {describe_root(cfg.root, found)}: data.dataset={found}"
    if found != cfg.dataset:
        line += f" (the config named {cfg.dataset})"
    return replace(cfg, dataset=found), line


def data_config_for(spec: str, overrides: list[str] = (), **fields: Any) -> DataConfig:
    """A DataConfig for ``--data SPEC``: a registered data set that reads no root (by name), or a path whose format
    is detected; ``fields`` (batch_size, num_workers, img_size ...) and then ``key=value`` overrides are applied."""
    settings: dict[str, Any] = dict(fields)
    named = [s.name for s in dataset_specs() if not s.reads_root]
    if spec in named:
        settings["dataset"] = spec
    elif os.path.exists(spec):
        settings.update(dataset=detect_format(spec), root=spec)
    else:
        raise FileNotFoundError(f"--data {spec}: neither a data set built in or registered ({', '.join(named)}) "
                                "nor a path that exists")
    for item in overrides:
        keys, value = parse_override(item)
        settings[".".join(keys)] = value
    return from_dict(DataConfig, settings, prefix="--set ")


__all__ = [
    "LAYOUTS",
    "check_root",
    "cifar_detector",
    "data_config_for",
    "describe_cifar",
    "describe_imagefolder",
    "describe_root",
    "detect_format",
    "follow_root",
    "is_csv",
    "is_imagefolder",
]
