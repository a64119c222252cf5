"""What kind of data set a path is, and the ``DataConfig`` the command line's ``--data`` names.

``detect_format`` is the one place a path is recognised (``deit data check``, ``deit eval``, ``deit analyze``, and
``deit train`` when ``data.root`` is given: :func:`follow_root`): a ``.csv`` file or a folder with ``train.csv``
is csv; a CIFAR python archive (by its members) or its extracted folder is cifar10/cifar100; a folder with
sub-folders is an imagefolder. Anything else is refused with what it holds and the layouts that are read.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from dataclasses import replace
from typing import Any

from deit.data.config import DATASETS, FILE_DATASETS, DataConfig
from deit.data.folders import imagefolder_layout
from deit.data.images import DataError
from deit.runtime.typedconfig import from_dict, parse_override

CIFAR_FOLDERS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}
LAYOUTS = ("a CIFAR python archive (cifar-10-python.tar.gz, cifar-100-python.tar.gz) or its extracted folder; "
           "image folders ROOT/train/CLASS/*.jpg with ROOT/val/ (or validation/, test/) beside it, or one "
           "ROOT/CLASS/*.jpg; a csv list ROOT/train.csv with ROOT/val.csv, or one FILE.csv")


def _archive_format(path: str) -> str:
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            names = tar.getnames()
        for folder, kind in CIFAR_FOLDERS.items():
            if any(folder in n for n in names):
                return kind
    raise DataError(f"{path}: cannot tell the format of this file; the layouts read are {LAYOUTS}")


def _no_format(path: str, entries: list[os.DirEntry]) -> DataError:
    """The error for a folder that holds no data set: what is in it, and the layouts that are read."""
    kinds = Counter(os.path.splitext(e.name)[1].lower() or "extension-less" for e in entries if e.is_file())
    found = ", ".join(f"{n} {ext} file{'s' if n > 1 else ''}" for ext, n in kinds.most_common(5))
    found = f"it has {found} and no folders" if found else "it is empty"
    roots = [e.name for e in entries if e.is_file() and e.name.lower().endswith((".csv", ".tar.gz", ".tgz", ".tar"))]
    hint = f"; did you mean {os.path.join(path, roots[0])}?" if roots else ""
    return DataError(f"{path} holds no data set ({found}{hint}); the layouts read are {LAYOUTS}")


def detect_format(path: str | os.PathLike) -> str:
    """One of ``FILE_DATASETS`` for an existing path; a DataError for one that holds no data set."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return "csv" if path.lower().endswith(".csv") else _archive_format(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist")
    entries = [e for e in os.scandir(path) if not e.name.startswith(".")]
    names = {e.name for e in entries}
    files = {e.name for e in entries if e.is_file()}
    if "train.csv" in files:
        return "csv"
    if "cifar-10-batches-py" in names or "batches.meta" in files:
        return "cifar10"
    if "cifar-100-python" in names or {"meta", "train", "test"} <= files:
        return "cifar100"
    if not any(e.is_dir() for e in entries):
        raise _no_format(path, entries)
    return "imagefolder"


def describe_root(path: str, fmt: str) -> str:
    """What the data root holds, in words (for the line that says which format was found)."""
    if fmt == "imagefolder":
        return f"image folders ({imagefolder_layout(path).describe()})"
    if fmt == "csv":
        return "a csv list"
    name = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[fmt]
    return f"the {name} python {'archive' if os.path.isfile(path) else 'folder'}"


def check_root(path: str) -> None:
    """A data root must exist and be readable (a folder: listable too)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.root {path} does not exist: give the folder or archive the data is in")
    mode = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
    if not os.access(path, mode):
        raise PermissionError(f"data.root {path} is not readable by this user: fix its permissions "
                              f"(chmod -R a+rX {path}) or copy the data where you can read it")


def follow_root(cfg: DataConfig) -> tuple[DataConfig, str | None]:
    """``cfg`` reading its ``root`` in the format found there (whatever data set the config named), and the line
    that says which; (``cfg``, None) without a root. Raises for a root that is missing, unreadable, or holds
    no data set."""
    if not cfg.root:
        return cfg, None
    check_root(cfg.root)
    found = detect_format(cfg.root)
    line = f"data: {cfg.root} holds {describe_root(cfg.root, found)}: data.dataset={found}"
    if found != cfg.dataset:
        line += f" (the config named {cfg.dataset})"
    return replace(cfg, dataset=found), line


def data_config_for(spec: str, overrides: list[str] = (), **fields: Any) -> DataConfig:
    """A DataConfig for ``--data SPEC``: a built-in data set name, or a path whose format is detected;
    ``fields`` (batch_size, num_workers, img_size ...) and then ``key=value`` overrides are applied."""
    settings: dict[str, Any] = dict(fields)
    if spec in DATASETS and spec not in FILE_DATASETS:
        settings["dataset"] = spec
    elif os.path.exists(spec):
        settings.update(dataset=detect_format(spec), root=spec)
    else:
        builtin = [d for d in DATASETS if d not in FILE_DATASETS]
        raise FileNotFoundError(f"--data {spec}: neither a built-in data set ({', '.join(builtin)}) nor a path "
                                "that exists")
    for item in overrides:
        keys, value = parse_override(item)
        settings[".".join(keys)] = value
    return from_dict(DataConfig, settings, prefix="--set ")


__all__ = ["LAYOUTS", "check_root", "data_config_for", "describe_root", "detect_format", "follow_root"]
