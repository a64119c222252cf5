"""Checkpoint errors. All are ValueError subclasses, so the CLI prints them as one clear line."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be read, recognised, or loaded into the requested model."""


class NotACheckpointError(CheckpointError):
    """A file of another kind (empty, ONNX, TorchScript, a training state, random bytes): says what it is."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would import or call something other than tensors and plain containers."""


class UnknownLayoutError(CheckpointError):
    """The keys match none of the supported checkpoint layouts or architecture families."""


class StateDictMismatchError(CheckpointError):
    """Missing keys, unexpected keys, or a tensor whose shape does not fit the architecture."""


class HashMismatchError(CheckpointError):
    """A downloaded or cached file whose sha256 does not start with the published prefix."""


class DownloadError(CheckpointError):
    """Release weights could not be fetched (no network, proxy, ...)."""
