"""Reading and writing checkpoint files safely.

Pickles (``.pth``/``.bin``) are only ever opened with ``torch.load(weights_only=True)``: a file that would import or
call anything besides tensors and plain containers is refused with :class:`UnsafeCheckpointError`, never run.
Our own files are ``.safetensors`` with the architecture, class count, image size, preprocessing and class names
in the header metadata (all strings, JSON where structured), so a file is self-describing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from deit.checkpoints import sniff
from deit.checkpoints.errors import CheckpointError, UnsafeCheckpointError

# Header metadata of our layout. Every value is a string (a safetensors rule); structured values are JSON.
FORMAT_NAME = "deit"
FORMAT_VERSION = "1"
META_FORMAT = "format"  # "deit"
META_VERSION = "format_version"  # "1"
META_FAMILY = "family"  # architecture family, a key of deit.models.FAMILIES ("vit", ...)
META_ARCH = "architecture"  # registered model name when the config is one of them, else "custom"
META_CONFIG = "config"  # JSON of the family's config dataclass: everything needed to rebuild the model
META_NUM_CLASSES = "num_classes"
META_IMG_SIZE = "img_size"
META_PREPROCESSING = "preprocessing"  # JSON {input_size, mean, std, interpolation, crop_pct}
META_CLASS_NAMES = "class_names"  # JSON list of strings, only when the model has them
RESERVED_METADATA = (
    META_FORMAT,
    META_VERSION,
    META_FAMILY,
    META_ARCH,
    META_CONFIG,
    META_NUM_CLASSES,
    META_IMG_SIZE,
    META_PREPROCESSING,
    META_CLASS_NAMES,
)

# Globals the official training script leaves in its checkpoints ('args' is an argparse.Namespace). Rebuilding a
# Namespace only sets attributes: no code of the file runs.
_SAFE_GLOBALS = [argparse.Namespace]


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CheckpointError(
            f"{path}: a safetensors file deit cannot read: {sniff.safetensors_problem(Path(path))} "
            f"({' '.join(str(exc).split())}); download or save it again"
        ) from None
    return tensors, metadata


def torch_load_safe(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with a clear refusal for pickles that would run code."""
    # torch < 2.5 has no safe_globals: such files are then refused like any other non-tensor global.
    allow = getattr(torch.serialization, "safe_globals", None)
    try:
        with allow(_SAFE_GLOBALS) if allow else contextlib.nullcontext():
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if any(s in msg for s in ("Unsupported global", "WeightsUnpickler", "Weights only load failed")):
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what = f"it imports {found.group(1)}" if found else "it contains objects other than tensors"
            raise UnsafeCheckpointError(
                f"{path}: refused to load this pickle: {what}, which could run code on load, and deit only opens "
                "pickles with torch.load(weights_only=True). Nothing from the file was executed. If you trust its "
                "source, re-save just the weights (torch.save(state_dict) or safetensors) and load that file."
            ) from None
        raise CheckpointError(f"{path}: a pickle deit cannot read ({_first_line(msg)}); pass a .safetensors or "
                              ".pth checkpoint") from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch's unpickler fails on torn files with KeyError, IndexError, RuntimeError ...
        raise CheckpointError(
            f"{path}: a torch.save file deit cannot read, truncated or corrupt ({type(exc).__name__}: "
            f"{_first_line(str(exc))}); download or save it again"
        ) from None


def _first_line(text: str, limit: int = 200) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_file(path: str | os.PathLike) -> tuple[Any, dict[str, str] | None]:
    """Return (content, safetensors metadata or None). Content is a state dict, or whatever the pickle held. A
    file that is not a checkpoint (empty, ONNX, TorchScript, a training state, other bytes) is refused, saying
    what it is."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; expected a checkpoint file")
    kind = sniff.file_kind(path)
    sniff.refuse(path, kind)
    if kind == "safetensors":
        return read_safetensors(path)
    if kind == "torch-zip" and sniff.is_training_state(path):
        sniff.refuse_training_state(path)
    return torch_load_safe(path), None


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors with no storage shared between keys (a safetensors requirement)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident in seen:
            t = t.clone()
        seen.add(ident)
        out[k] = t
    return out


def write_safetensors(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(_plain_tensors(state_dict), str(tmp), metadata=metadata)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the final name


def encode_metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def is_deit_metadata(metadata: Mapping[str, str] | None) -> bool:
    return bool(metadata) and metadata.get(META_FORMAT) == FORMAT_NAME and META_CONFIG in metadata
