"""What kind of file a path is, decided from its bytes (never its name), so a file that is not a checkpoint gets
one line saying what it is and what to pass instead.

Kinds: ``safetensors`` (8-byte little-endian header length, then a JSON object), ``torch-zip`` (``torch.save``'s
zip archive), ``torchscript`` (a zip holding ``code/`` and ``constants.pkl``: ``torch.jit.save``), ``pickle`` (a
legacy ``torch.save`` or a plain pickle), ``onnx`` (a protobuf ``ModelProto``), ``empty``, ``unknown``. A
``torch-zip`` whose pickle is a dict with a training run's keys is a training state (:func:`is_training_state`).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Literal

from deit.checkpoints.errors import NotACheckpointError

FileKind = Literal["safetensors", "torch-zip", "torchscript", "pickle", "onnx", "empty", "unknown"]

# Keys that make a torch.save dict the training state of one of our run directories (deit.train.checkpointing
# writes state.pt as {"version", "model", "optimizer", "progress", "rng", ...}). The official script's
# checkpoint.pth ({'model', 'optimizer', 'lr_scheduler', 'epoch', ...}) has no "progress": its 'model' is read.
TRAINING_STATE_KEYS = frozenset({"version", "optimizer", "progress"})
_MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors' own limit on the JSON header
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
# Field tags a ModelProto may start with after ir_version (field 1, varint): producer_name (2), producer_version
# (3), domain (4), model_version (5), doc_string (6), graph (7), opset_import (8), metadata_props (14), ...
_ONNX_NEXT_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A, 0x82, 0x8A})
_MAX_PICKLE_SNIFF = 64 << 20  # a training state's pickle (not its tensors) is kilobytes


def file_kind(path: str | os.PathLike) -> FileKind:
    """The kind of the file at ``path``, from its first bytes (and a zip's table of contents)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head[:4] == _ZIP_MAGIC:
        return _zip_kind(path)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _MAX_SAFETENSORS_HEADER:
        return "safetensors"
    if head[0] == _PICKLE_PROTO and len(head) > 1 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return "pickle"
    if _looks_like_onnx(head) and _parses_as_onnx(path):
        return "onnx"
    return "unknown"


def _zip_kind(path: str | os.PathLike) -> FileKind:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "torch-zip"  # a torn archive: torch.load names what is wrong with it
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return "torch-zip"


def _looks_like_onnx(head: bytes) -> bool:
    """ir_version as the first field (tag 0x08, a small varint), then a ModelProto field tag."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 0x7F and head[2] in _ONNX_NEXT_TAGS


def _parses_as_onnx(path: str | os.PathLike) -> bool:
    try:
        import onnx
    except ImportError:
        return True  # the leading fields are all we can check
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception:  # noqa: BLE001 (protobuf's DecodeError and friends: then it is not ONNX)
        return False
    return model.ir_version > 0 and model.HasField("graph")


# ------------------------------------------------------------------------------------------- training states
class _Anything(dict):
    """Stands in for every global a pickle names: built from anything, filled with anything, never the real
    class, so nothing of the file runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _StructureOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        return _Anything

    def persistent_load(self, pid: Any) -> None:
        return None  # a tensor's storage: not needed to see the structure


def is_training_state(path: str | os.PathLike) -> bool:
    """Whether a ``torch.save`` zip holds a dict with a training state's keys, read without importing or calling
    anything the file names."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None or z.getinfo(pkl).file_size > _MAX_PICKLE_SNIFF:
                return False
            obj = _StructureOnly(z.open(pkl)).load()
    except Exception:  # noqa: BLE001 (a torn or foreign pickle is simply not a training state)
        return False
    return type(obj) is dict and set(obj) >= TRAINING_STATE_KEYS


# ------------------------------------------------------------------------------------------------ the refusals
def refuse(path: Path, kind: FileKind) -> None:
    """Raise the one-line refusal for a file of ``kind`` that is not a checkpoint (return if it may be one)."""
    if kind == "empty":
        raise NotACheckpointError(f"{path} is empty (0 bytes): an interrupted download or copy? Fetch or save the "
                                  "checkpoint again")
    if kind == "onnx":
        raise NotACheckpointError(
            f"{path} is an ONNX model (an exported graph), not a checkpoint: run it with onnxruntime "
            "(onnxruntime.InferenceSession), or pass the .safetensors/.pth checkpoint it was exported from")
    if kind == "torchscript":
        raise NotACheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save, `deit export --format torchscript`), not a "
            "checkpoint: run it with torch.jit.load, or pass the .safetensors/.pth checkpoint it was exported from")
    if kind == "unknown":
        raise NotACheckpointError(
            f"{path} is not a checkpoint deit can read: its bytes are neither safetensors, a torch.save file nor a "
            "pickle (first bytes {!r}); pass a .safetensors or .pth checkpoint".format(_first_bytes(path)))


def refuse_training_state(path: Path) -> None:
    run = path.parent
    weights = [p.name for p in (run / "best.safetensors", run / "last.safetensors") if p.is_file()]
    use = (f"pass {run / weights[0]}" if weights else
           "pass the run's best.safetensors or last.safetensors")
    raise NotACheckpointError(
        f"{path} is a training state (what `deit train` saves to resume: weights, optimizer, progress, RNG), "
        f"not a model checkpoint: {use} for the weights, or continue the training with `deit train --resume {run}`")


def safetensors_problem(path: Path) -> str:
    """Why a file that starts like safetensors cannot be read: its header length against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            return f"it is truncated: its header says {n} header bytes, the file has {size - 8} after the length"
        header = f.read(n)
    try:
        entries = json.loads(header)
        ends = [int(e["data_offsets"][1]) for e in entries.values() if isinstance(e, dict) and "data_offsets" in e]
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError, KeyError, IndexError):
        return "its header is not the JSON table of tensors safetensors writes"
    if ends and max(ends) > size - 8 - n:
        return f"it is truncated: its tensors need {max(ends)} bytes, the file has {size - 8 - n}"
    return "it is corrupt"


def _first_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


__all__ = ["TRAINING_STATE_KEYS", "FileKind", "file_kind", "is_training_state", "refuse", "refuse_training_state",
           "safetensors_problem"]
