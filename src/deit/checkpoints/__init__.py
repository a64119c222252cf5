"""Checkpoints in every ecosystem's layout: load, save, convert, export to HF transformers, release weights.

``load_checkpoint(path, **overrides)`` reads our ``.safetensors``, official / timm ``.pth`` (or timm
``.safetensors``), OpenMMLab and HF transformers (legacy and 5.x names) files and returns a ready model;
``save_checkpoint(model, path)`` writes our self-describing ``.safetensors``; ``export_hf`` writes a
``save_pretrained`` directory. Pickles are only opened with ``torch.load(weights_only=True)``.

Only submodules of ``deit.models`` are imported in this package (``deit.models.zoo`` imports from it).
"""

from deit.checkpoints.errors import (
    CheckpointError,
    DownloadError,
    HashMismatchError,
    StateDictMismatchError,
    UnknownLayoutError,
    UnsafeCheckpointError,
)
from deit.checkpoints.hf import export_hf
from deit.checkpoints.infer import infer_architecture, infer_vit_config
from deit.checkpoints.layouts import SUPPORTED_LAYOUTS, detect_layout, from_canonical_hf, to_canonical
from deit.checkpoints.loading import (
    CheckpointInfo,
    LoadReport,
    load_checkpoint,
    load_checkpoint_with_report,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
    save_official,
)
from deit.checkpoints.pretrained import fetch_release, load_pretrained_weights

__all__ = [
    "SUPPORTED_LAYOUTS",
    "CheckpointError",
    "CheckpointInfo",
    "DownloadError",
    "HashMismatchError",
    "LoadReport",
    "StateDictMismatchError",
    "UnknownLayoutError",
    "UnsafeCheckpointError",
    "detect_layout",
    "export_hf",
    "fetch_release",
    "from_canonical_hf",
    "infer_architecture",
    "infer_vit_config",
    "load_checkpoint",
    "load_checkpoint_with_report",
    "load_pretrained_weights",
    "load_state_dict_strict",
    "read_checkpoint",
    "save_checkpoint",
    "save_official",
    "to_canonical",
]
