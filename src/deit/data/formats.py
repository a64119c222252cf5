"""What kind of data set a path is, and the ``DataConfig`` the command line's ``--data`` names.

``detect_format`` is the one place a path is recognised (``deit data check``, ``deit eval``, ``deit analyze``):
a ``.csv`` file or a folder with ``train.csv`` is csv; a CIFAR python archive (by its members) or its extracted
folder is cifar10/cifar100; any other folder is an imagefolder.
"""

from __future__ import annotations

import os
import tarfile
from typing import Any

from deit.data.config import DATASETS, FILE_DATASETS, DataConfig
from deit.data.images import DataError
from deit.runtime.typedconfig import from_dict, parse_override

CIFAR_FOLDERS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}


def _archive_format(path: str) -> str:
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            names = tar.getnames()
        for folder, kind in CIFAR_FOLDERS.items():
            if any(folder in n for n in names):
                return kind
    raise DataError(f"{path}: cannot tell the format of this file (a .csv list or a CIFAR python archive are "
                    f"read); give the format ({', '.join(FILE_DATASETS)})")


def detect_format(path: str | os.PathLike) -> str:
    """One of ``FILE_DATASETS`` for an existing path."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return "csv" if path.lower().endswith(".csv") else _archive_format(path)
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


__all__ = ["data_config_for", "detect_format"]
