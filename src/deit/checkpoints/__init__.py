"""Checkpoints in every ecosystem's layout: load, save, convert, export to HF transformers, release weights.

``load_checkpoint(path, **overrides)`` reads our ``.safetensors``, official / timm ``.pth`` (or timm
``.safetensors``; DeiT III's official names too), OpenMMLab (mmcls, mmpretrain's DeiT and DeiT3) and HF
transformers (legacy and 5.x names) files and returns a ready model; ``save_checkpoint(model, path)`` writes our
self-describing ``.safetensors``; ``save_official``, ``save_timm``, ``save_openmmlab`` the weights-only layouts;
``export_hf`` writes a ``save_pretrained`` directory. Pickles are only opened with ``torch.load(weights_only=True)``.

``create_model(name, pretrained=True | path)`` builds a named model with weights; ``load_model(path, architecture)``
is the one checkpoint-to-model function every command uses. This package depends on ``deit.models``, never the
reverse.
"""

from deit.checkpoints.errors import (
    CheckpointError,
    DownloadError,
    HashMismatchError,
    StateDictMismatchError,
    UnknownLayoutError,
    UnsafeCheckpointError,
)
from deit.checkpoints.factory import create_model, load_model
from deit.checkpoints.hf import export_hf
from deit.checkpoints.infer import infer_architecture
from deit.checkpoints.layouts import (
    SUPPORTED_LAYOUTS,
    detect_layout,
    from_canonical,
    from_canonical_hf,
    to_canonical,
)
from deit.checkpoints.loading import LoadReport, load_checkpoint, load_checkpoint_with_report, load_state_dict_strict
from deit.checkpoints.pretrained import fetch_release, load_pretrained_weights
from deit.checkpoints.reading import CheckpointInfo, read_checkpoint, weights_only_losses
from deit.checkpoints.saving import save_checkpoint, save_official, save_openmmlab, save_timm

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
    "create_model",
    "detect_layout",
    "export_hf",
    "fetch_release",
    "from_canonical",
    "from_canonical_hf",
    "infer_architecture",
    "load_checkpoint",
    "load_checkpoint_with_report",
    "load_model",
    "load_pretrained_weights",
    "load_state_dict_strict",
    "read_checkpoint",
    "save_checkpoint",
    "save_official",
    "save_openmmlab",
    "save_timm",
    "to_canonical",
    "weights_only_losses",
]
