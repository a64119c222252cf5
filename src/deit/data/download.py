"""The official CIFAR archives: fetched once (per node, under torch.distributed) into a cache directory, checked
against their published md5, and read from there by ``dataset: cifar10`` / ``cifar100`` when ``data.root`` is
not given. Without a network the error says what to fetch by hand and where to put it.

The cache directory is ``$DEIT_DATA_DIR``, else ``~/.cache/deit/datasets``.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deit.data.images import DataError
from deit.runtime.downloads import file_digest, once_per_node
from deit.runtime.files import atomic_path

log = logging.getLogger("deit.data")
DATA_DIR_ENV = "DEIT_DATA_DIR"


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    size: int  # bytes

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                       170_498_071),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", 169_001_437),
}


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "deit" / "datasets")


def _fetch(url: str, dst: Path) -> None:
    """Download ``url`` to ``dst`` atomically (tests replace this)."""
    with atomic_path(dst) as tmp, urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            f.write(chunk)


def _verify(path: Path, archive: Archive) -> Path:
    digest = file_digest(path, "md5")
    if digest != archive.md5:
        raise DataError(f"{path}: md5 {digest} is not the published {archive.md5} of {archive.url}: the file is "
                        f"corrupt or not the release; delete it and try again, or download the URL by hand")
    return path


def _by_hand(name: str, archive: Archive, dst: Path, why: str) -> DataError:
    return DataError(
        f"could not download the {name} archive ({why}). Download {archive.url} by hand (md5 {archive.md5}, "
        f"{archive.size / 2**20:.0f} MiB) on a machine with network access and put it at {dst} (or anywhere, and set "
        f"data.root=/path/to/{archive.filename}); {DATA_DIR_ENV} moves the cache directory"
    )


def fetch_dataset(name: str) -> Path:
    """The verified local copy of ``name``'s official archive, downloading it into :func:`data_dir` if needed."""
    if name not in ARCHIVES:
        raise ValueError(f"{name!r} has no download; known: {', '.join(ARCHIVES)}")
    archive = ARCHIVES[name]
    dst = data_dir() / archive.filename

    def ensure() -> Path:
        if dst.is_file():
            return _verify(dst, archive)
        dst.parent.mkdir(parents=True, exist_ok=True)
        log.warning("downloading %s to %s", archive.url, dst)
        try:
            _fetch(archive.url, dst)
        except Exception as exc:  # URLError, timeouts, proxies ...: all mean "no file"
            raise _by_hand(name, archive, dst, f"{type(exc).__name__}: {exc}") from None
        try:
            return _verify(dst, archive)
        except DataError:
            dst.unlink(missing_ok=True)  # never leave a bad file where the next run would trust it
            raise

    def check() -> Path:
        if not dst.is_file():
            raise FileNotFoundError(dst)
        return _verify(dst, archive)

    return once_per_node(ensure, check, lambda: _by_hand(name, archive, dst, "local rank 0 of this node failed"))


__all__ = ["ARCHIVES", "DATA_DIR_ENV", "Archive", "data_dir", "fetch_dataset"]
