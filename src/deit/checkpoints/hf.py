"""HF transformers directories: read their config.json / preprocessor_config.json, and export to one.

Nothing here imports ``transformers``: a ``save_pretrained`` directory is plain JSON plus weights, so reading and
writing it needs no test-only dependency.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from deit.checkpoints.errors import CheckpointError
from deit.checkpoints.io import read_file, write_safetensors
from deit.checkpoints.layouts import from_canonical_hf
from deit.checkpoints.saving import unwrap_model
from deit.models.preprocessing import Preprocessing

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# PIL resampling codes as HF image processors store them.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_RESAMPLE_CODE = {v: k for k, v in _RESAMPLE.items()}


def is_hf_directory(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in (*WEIGHT_FILES, *INDEX_FILES, "config.json"))


def read_hf_weights(directory: str | os.PathLike) -> dict:
    """All tensors of a save_pretrained directory (single file or sharded with an index)."""
    d = Path(directory)
    for name in WEIGHT_FILES:
        if (d / name).exists():
            obj, _ = read_file(d / name)
            return obj
    for name in INDEX_FILES:
        if (d / name).exists():
            index = json.loads((d / name).read_text())
            tensors: dict = {}
            for shard in sorted(set(index.get("weight_map", {}).values())):
                obj, _ = read_file(d / shard)
                tensors.update(obj)
            return tensors
    present = sorted(p.name for p in d.iterdir())[:20]
    raise CheckpointError(
        f"{d}: no weights found; expected one of {', '.join(WEIGHT_FILES + INDEX_FILES)} (directory has: "
        f"{', '.join(present) or 'nothing'})"
    )


def read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None


def config_from_hf(hf_config: dict, weights_config: Any) -> tuple[dict[str, Any], list[str]]:
    """ViTConfig fields an HF config.json fixes that the weights cannot (head count, LayerNorm eps, ...)."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if "num_attention_heads" in hf_config:
        fields["num_heads"] = int(hf_config["num_attention_heads"])
    if "layer_norm_eps" in hf_config:
        fields["layer_norm_eps"] = float(hf_config["layer_norm_eps"])
        if fields["layer_norm_eps"] != 1e-6:
            notes.append(f"LayerNorm eps {fields['layer_norm_eps']:g} from config.json (DeiT's own models use 1e-6)")
    if "qkv_bias" in hf_config:
        fields["qkv_bias"] = bool(hf_config["qkv_bias"])
    if hf_config.get("hidden_act", "gelu") not in ("gelu",):
        raise CheckpointError(f"config.json hidden_act {hf_config['hidden_act']!r}: only 'gelu' (exact) is supported")
    for theirs, ours in (("hidden_size", "embed_dim"), ("num_hidden_layers", "depth"), ("patch_size", "patch_size")):
        value = hf_config.get(theirs)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]  # HF allows (h, w) sizes; DeiT's are square
        if isinstance(value, int) and value != getattr(weights_config, ours):
            notes.append(
                f"config.json says {theirs}={hf_config[theirs]} but the weights have {ours}="
                f"{getattr(weights_config, ours)}: the weights win"
            )
    return fields, notes


def class_names_from_hf(hf_config: dict, num_classes: int) -> list[str] | None:
    id2label = hf_config.get("id2label") or {}
    if len(id2label) != num_classes or num_classes == 0:
        return None
    names = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_classes)]
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None  # HF's placeholder names carry no information
    return names


def _edge(value: Any, *keys: str) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for k in keys:
            if k in value:
                return int(value[k])
    return None


def preprocessing_from_hf(pp: dict, img_size: int) -> tuple[Preprocessing, list[str]]:
    """An HF image processor's resize / crop / normalisation as our Preprocessing."""
    notes: list[str] = []
    crop = _edge(pp.get("crop_size"), "height", "shortest_edge") if pp.get("do_center_crop", True) else None
    resize = _edge(pp.get("size"), "shortest_edge", "height")
    input_size = crop or resize or img_size
    crop_pct = 1.0
    if crop and resize and resize >= crop:
        crop_pct = crop / resize
    resample = pp.get("resample", 3)
    if isinstance(resample, str):
        interpolation = resample.lower() if resample.lower() in _RESAMPLE_CODE else "bicubic"
    else:
        interpolation = _RESAMPLE.get(int(resample), "bicubic")
    if pp.get("do_normalize", True):
        mean, std = tuple(pp.get("image_mean", Preprocessing.mean)), tuple(pp.get("image_std", Preprocessing.std))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if tuple(round(m, 3) for m in mean) == (0.5, 0.5, 0.5):
        notes.append("preprocessor_config.json normalises with mean/std 0.5 (HF's default), not ImageNet's")
    pre = Preprocessing(input_size=input_size, mean=mean, std=std, interpolation=interpolation, crop_pct=crop_pct)
    return pre, notes


# ---------------------------------------------------------------------------------------------------- export
_HF_CLASSES = {  # class: (key prefix, heads, needs a distilled model)
    "DeiTForImageClassificationWithTeacher": ("deit", "teacher", True),
    "DeiTForImageClassification": ("deit", "single", True),
    "DeiTModel": ("", "none", True),
    "ViTForImageClassification": ("vit", "single", False),
    "ViTModel": ("", "none", False),
}


def _hf_class_for(cfg, head_mode: str) -> str:
    """The transformers class that computes what our model computes."""
    if cfg.num_classes == 0:
        return "DeiTModel" if cfg.distilled else "ViTModel"
    if not cfg.distilled:
        return "ViTForImageClassification"
    if head_mode == "cls":
        return "DeiTForImageClassification"
    if head_mode == "dist":
        import warnings

        warnings.warn(
            "HF has no class that predicts from the distillation head alone: exported as "
            "DeiTForImageClassificationWithTeacher, whose logits average both heads",
            stacklevel=3,
        )
    return "DeiTForImageClassificationWithTeacher"


def _hf_config(cfg, hf_class: str, class_names: list[str]) -> dict:
    names = class_names if len(class_names) == cfg.num_classes else [f"LABEL_{i}" for i in range(cfg.num_classes)]
    return {
        "architectures": [hf_class],
        "model_type": "deit" if cfg.distilled else "vit",
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": cfg.layer_norm_eps,
        "image_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "qkv_bias": cfg.qkv_bias,
        "encoder_stride": cfg.patch_size,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "dtype": "float32",
    }


def _hf_processor(pre: Preprocessing) -> dict:
    return {
        "image_processor_type": "DeiTImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": pre.resize_size},
        "resample": _RESAMPLE_CODE.get(pre.interpolation, 3),
        "do_center_crop": True,
        "crop_size": {"height": pre.input_size, "width": pre.input_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
    }


def export_hf(
    model: nn.Module, directory: str | os.PathLike, layout: str = "v5", *, hf_class: str | None = None
) -> Path:
    """Write ``model`` as an HF transformers ``save_pretrained`` directory: config.json, model.safetensors and
    preprocessor_config.json.

    A distilled model becomes ``DeiTForImageClassificationWithTeacher`` (logits = average of the heads), or
    ``DeiTForImageClassification`` when its head_mode is 'cls'; a non-distilled one ``ViTForImageClassification``.
    ``layout`` picks the tensor names: "v5" (transformers 5.x) or "legacy" (transformers <= 4.x); transformers 5
    reads both. ``hf_class`` forces the class (one of those three, or DeiTModel / ViTModel for no head).
    """
    model = unwrap_model(model)
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "embed_dim") or not hasattr(cfg, "distilled"):
        raise ValueError(f"export_hf needs a DeiT VisionTransformer, got {type(model).__name__}")
    if layout not in ("v5", "legacy"):
        raise ValueError(f"layout must be 'v5' (transformers 5.x names) or 'legacy' (<= 4.x), got {layout!r}")
    deit3 = [what for what, has in (("LayerScale", cfg.init_values is not None),
                                    ("a position embedding of the patch tokens only", not cfg.prefix_pos_embed)) if has]
    if deit3:
        raise ValueError(f"HF transformers has no DeiT III: this model has {' and '.join(deit3)}, which its DeiT "
                         "and ViT lack; write it in our layout or the official, timm or openmmlab one instead")
    hf_class = hf_class or _hf_class_for(cfg, getattr(model, "head_mode", "avg"))
    if hf_class not in _HF_CLASSES:
        raise ValueError(f"hf_class must be one of {sorted(_HF_CLASSES)}, got {hf_class!r}")
    prefix, heads, needs_dist = _HF_CLASSES[hf_class]
    if needs_dist != cfg.distilled:
        kind = "distilled" if cfg.distilled else "non-distilled"
        raise ValueError(f"{hf_class} does not fit a {kind} model")
    if cfg.mlp_ratio * cfg.embed_dim != int(cfg.mlp_ratio * cfg.embed_dim):
        raise ValueError(f"mlp_ratio {cfg.mlp_ratio} gives a fractional intermediate size")
    tensors = from_canonical_hf(model.state_dict(), layout=layout, prefix=prefix, heads=heads)

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = _hf_config(cfg, hf_class, list(getattr(model, "class_names", None) or []))
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    pre = getattr(model, "preprocessing", None) or Preprocessing(input_size=cfg.img_size)
    (d / "preprocessor_config.json").write_text(json.dumps(_hf_processor(pre), indent=2) + "\n")
    # transformers requires the "format" entry; the others record where the file came from.
    write_safetensors(d / "model.safetensors", tensors, {"format": "pt", "exported_by": "deit"})
    for stale in ("pytorch_model.bin", *INDEX_FILES):
        if (d / stale).exists():
            (d / stale).unlink()  # would shadow or contradict the new weights
    return d
