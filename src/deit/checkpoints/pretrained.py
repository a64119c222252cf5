"""Release weights: the official URLs, the torch hub cache, sha256 verification, one download per node.

``create_model(name, pretrained=True)`` fetches the official file once into ``torch.hub.get_dir()/checkpoints``
(the 8 hex digits of its name are the prefix of its sha256, torch.hub's ``check_hash`` convention) and verifies it,
cached or not. DeiT III's official files carry no digest in their names and none is published: the first copy is
trusted once it loads as the named architecture, and its sha256, recorded beside it, is checked on later loads.
``pretrained="/path/file"`` loads a local file in any supported layout instead. Under ``torch.distributed`` only
local rank 0 of each node downloads; the other ranks wait at a barrier.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from deit.checkpoints.errors import CheckpointError, DownloadError, HashMismatchError
from deit.checkpoints.loading import load_weights_adapting
from deit.checkpoints.reading import read_checkpoint
from deit.models.registry import ModelEntry, get_family, structure
from deit.runtime.downloads import file_digest, once_per_node
from deit.runtime.files import atomic_write_text

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


def digest_record(path: Path) -> Path:
    """Where the sha256 of a release file with no published digest is recorded (``<file>.sha256``)."""
    return path.with_name(path.name + ".sha256")


def verify_recorded(path: Path, url: str) -> None:
    """A release file with no published digest against the sha256 recorded at its first use: FileNotFoundError
    when none is recorded, HashMismatchError when the file changed since."""
    record = digest_record(path)
    recorded = record.read_text().split()[0] if record.exists() else None
    if recorded is None:
        raise FileNotFoundError(record)
    digest = sha256_of(path)
    if digest != recorded:
        raise HashMismatchError(
            f"{path}: its sha256 is {digest[:16]}..., but it was {recorded[:16]}... when first downloaded from {url} "
            f"(recorded in {record}): the file changed since. Delete both files to download it again, or download "
            f"the URL by hand and pass pretrained='/path/to/{path.name}'"
        )


def _trust_first_use(path: Path, url: str, validate: Callable[[Path], None]) -> None:
    """A release with no published digest, seen for the first time: accept it only if ``validate`` (a loadable
    checkpoint of the expected architecture) passes, then record its sha256 for every later load to check."""
    validate(path)
    digest = sha256_of(path)
    atomic_write_text(digest_record(path), f"{digest}  {path.name}\n")
    logger.warning("%s has no published digest: this first copy (a loadable checkpoint of the expected architecture) "
                   "is trusted, its sha256 %s... recorded in %s and checked on every later load", path.name,
                   digest[:16], digest_record(path).name)


def _verify(path: Path, url: str, prefix: str | None, validate: Callable[[Path], None]) -> None:
    if prefix:
        verify_hash(path, prefix, url)
    elif digest_record(path).exists():
        verify_recorded(path, url)
    else:  # put into the cache by hand, or downloaded before deit recorded digests: trusted like a download
        _trust_first_use(path, url, validate)


def _ensure_cached(url: str, dst: Path, prefix: str | None, validate: Callable[[Path], None]) -> Path:
    if dst.exists():
        _verify(dst, url, prefix, validate)
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
    digest_record(dst).unlink(missing_ok=True)  # a record of an earlier copy says nothing of this one
    try:
        _verify(dst, url, prefix, validate)
    except ValueError:  # a wrong hash, a file that is no checkpoint or of another architecture (CheckpointErrors)
        dst.unlink(missing_ok=True)  # never leave a bad file where the next run would trust it
        raise
    return dst


def _loadable(path: Path) -> None:
    read_checkpoint(path)


def fetch_release(url: str, validate: Callable[[Path], None] = _loadable) -> Path:
    """The verified local copy of a release file, downloading it into the torch hub cache if needed (once per
    node under torch.distributed).

    A file whose name carries its sha256 prefix is checked against it, cached or not. A file with no published
    digest (DeiT III's) is trusted on first use: ``validate`` must pass (by default: it reads as a checkpoint),
    then its sha256 is recorded beside it (``<file>.sha256``) and checked on every later load."""
    name = filename_of(url)
    dst = hub_checkpoint_dir() / name
    prefix = hash_prefix_of(name)

    def check() -> Path:
        if not dst.exists():
            raise FileNotFoundError(dst)
        if prefix:
            verify_hash(dst, prefix, url)
        else:
            verify_recorded(dst, url)
        return dst

    return once_per_node(lambda: _ensure_cached(url, dst, prefix, validate), check, lambda: DownloadError(
        f"rank 0 of this node could not fetch {url} into {dst} (see its error); download it by hand and pass "
        f"pretrained='/path/to/{name}'"))


def _of_architecture(entry: ModelEntry, url: str) -> Callable[[Path], None]:
    """A check that a downloaded file holds ``entry``'s architecture (any class count)."""
    unrecorded = get_family(entry.family).unrecorded

    def shape(config: object) -> dict:
        return {k: v for k, v in structure(config).items() if k not in unrecorded}

    def validate(path: Path) -> None:
        info = read_checkpoint(path)
        if info.family != entry.family or shape(info.config) != shape(entry.config):
            raise CheckpointError(f"{path} (from {url}) holds {info.describe()}, not the architecture of "
                                  f"{entry.name}: it is not that release, and was not kept")

    return validate


def resolve_pretrained(entry: ModelEntry, pretrained: bool | str | os.PathLike) -> Path:
    if pretrained is True:
        if not entry.pretrained_url:
            raise CheckpointError(
                f"{entry.name} has no released weights; pass pretrained='/path/to/checkpoint' (any supported layout)"
            )
        return fetch_release(entry.pretrained_url, _of_architecture(entry, entry.pretrained_url))
    if isinstance(pretrained, (str, os.PathLike)):
        text = os.fspath(pretrained)
        if text.startswith(("http://", "https://")):
            return fetch_release(text, _of_architecture(entry, text))
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
