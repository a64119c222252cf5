"""Release weights: the official URLs, the torch hub cache, sha256 verification, one download per node.

``create_model(name, pretrained=True)`` fetches the official file once into ``torch.hub.get_dir()/checkpoints``
(the 8 hex digits of its name are the prefix of its sha256, torch.hub's ``check_hash`` convention) and verifies it,
cached or not. ``pretrained="/path/file"`` loads a local file in any supported layout instead. Under
``torch.distributed`` only local rank 0 of each node downloads; the other ranks wait at a barrier.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from deit.checkpoints.errors import CheckpointError, DownloadError, HashMismatchError
from deit.checkpoints.loading import load_weights_adapting
from deit.checkpoints.reading import read_checkpoint
from deit.models.registry import ModelEntry
from deit.runtime.downloads import file_digest, once_per_node

logger = logging.getLogger("deit.checkpoints")

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def filename_of(url: str) -> str:
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"cannot tell a file name from URL {url!r}")
    return name


def hash_prefix_of(filename: str) -> str | None:
    """The sha256 prefix a released file carries in its name (``...-a1311bcf.pth`` -> ``a1311bcf``)."""
    found = _HASH_IN_NAME.findall(filename)
    return found[-1] if found else None


def sha256_of(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def verify_hash(path: Path, prefix: str | None, url: str) -> None:
    if not prefix:
        return
    digest = sha256_of(path)
    if not digest.startswith(prefix):
        raise HashMismatchError(
            f"{path}: its sha256 is {digest[:16]}..., but the release {url} has a sha256 starting with {prefix}: "
            f"the file is corrupt, truncated, or not the release. Delete it and try again, or download the URL by "
            f"hand and pass pretrained='/path/to/{filename_of(url)}'"
        )


def _fetch(url: str, dst: Path) -> None:
    """Download ``url`` to ``dst`` (atomically: torch writes a temporary file, then renames). Tests replace this."""
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=None, progress=True)


def _ensure_cached(url: str, dst: Path, prefix: str | None) -> Path:
    if dst.exists():
        verify_hash(dst, prefix, url)
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("downloading %s to %s", url, dst)
    try:
        _fetch(url, dst)
    except Exception as exc:  # URLError, HTTPError, socket errors, proxies ...: all mean "no file"
        raise DownloadError(
            f"could not download {url} ({type(exc).__name__}: {exc}). Download it by hand (e.g. on a machine with "
            f"network access) and pass pretrained='/path/to/{dst.name}', or load it with "
            f"deit.load_checkpoint('/path/to/{dst.name}'); or put it at {dst} where it will be found and verified"
        ) from None
    try:
        verify_hash(dst, prefix, url)
    except HashMismatchError:
        dst.unlink(missing_ok=True)  # never leave a bad file where the next run would trust it
        raise
    return dst


def fetch_release(url: str) -> Path:
    """The verified local copy of a release file, downloading it into the torch hub cache if needed (once per
    node under torch.distributed)."""
    name = filename_of(url)
    dst = hub_checkpoint_dir() / name
    prefix = hash_prefix_of(name)

    def check() -> Path:
        if not dst.exists():
            raise FileNotFoundError(dst)
        verify_hash(dst, prefix, url)
        return dst

    return once_per_node(lambda: _ensure_cached(url, dst, prefix), check, lambda: DownloadError(
        f"rank 0 of this node could not fetch {url} into {dst} (see its error); download it by hand and pass "
        f"pretrained='/path/to/{name}'"))


def resolve_pretrained(entry: ModelEntry, pretrained: bool | str | os.PathLike) -> Path:
    if pretrained is True:
        if not entry.pretrained_url:
            raise CheckpointError(
                f"{entry.name} has no released weights; pass pretrained='/path/to/checkpoint' (any supported layout)"
            )
        return fetch_release(entry.pretrained_url)
    if isinstance(pretrained, (str, os.PathLike)):
        text = os.fspath(pretrained)
        if text.startswith(("http://", "https://")):
            return fetch_release(text)
        path = Path(text).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"pretrained weights not found: {path}")
        return path
    raise TypeError(f"pretrained must be True, a path or a URL, got {pretrained!r}")


def load_pretrained_weights(model: nn.Module, entry: ModelEntry, pretrained: bool | str | os.PathLike) -> nn.Module:
    """Load release weights (``True``), a local file in any layout, or a URL into ``model`` built from ``entry``.

    The heads take the checkpoint's class count and pos_embed is resampled to the model's grid;
    ``create_model`` then applies the requested ``num_classes`` / ``img_size``.
    """
    path = resolve_pretrained(entry, pretrained)
    info = read_checkpoint(path)
    if info.family != entry.family:
        raise CheckpointError(f"{path} holds a {info.family} model, but {entry.name} is a {entry.family} model")
    for change in load_weights_adapting(model, info):
        logger.info("%s: %s", path.name, change)
    return model
