"""Key layouts of DeiT checkpoints in the public ecosystems, detected from the keys, converted to canonical and back.

Canonical = the official / timm names (``blocks.{i}.attn.qkv.weight`` ...), which are also our model's parameter
names. Supported layouts (their key names are shown in ``tests/checkpoints/test_checkpoint_layouts.py``):

- ``official``: ``{'model': state_dict, ...}`` pickle from the reference training script; DeiT III's
  (``models_v2.py``) names LayerScale ``blocks.{i}.gamma_1`` / ``gamma_2`` where timm has ``ls1.gamma`` / ``ls2.gamma``;
- ``timm``: the canonical keys, bare (or under ``state_dict``);
- ``openmmlab``: mmcls / mmpretrain, ``{'meta', 'state_dict'}`` with ``backbone.layers.{i}.ln1`` ... names (DeiT III:
  ``attn.gamma1.weight`` / ``ffn.gamma2.weight``);
- ``hf-legacy``: transformers <= 4.x names (``deit.encoder.layer.{i}.attention.attention.query`` ...);
- ``hf-v5``: transformers 5.x names (``deit.layers.{i}.attention.q_proj`` ...);
- ``deit``: our ``.safetensors`` with metadata (canonical keys; handled by the loader, not here).

HF and OpenMMLab layouts only exist for the ViT family; other families (e.g. a RegNet teacher) are read in their
timm layout.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from deit.checkpoints.errors import CheckpointError, StateDictMismatchError

SUPPORTED_LAYOUTS: tuple[str, ...] = ("deit", "official", "timm", "openmmlab", "hf-legacy", "hf-v5")
LAYOUT_HELP = (
    "supported layouts: deit (our .safetensors), official ({'model': state_dict} .pth; DeiT III's with "
    "blocks.{i}.gamma_1), timm (bare state dict, .pth or .safetensors), openmmlab ({'meta', 'state_dict'} with "
    "backbone.* keys), hf-legacy and hf-v5 (transformers save_pretrained directory or its weight file)"
)


@dataclass
class Converted:
    """A state dict in canonical keys, with what was found on the way."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    notes: list[str] = field(default_factory=list)
    # Config fields the layout itself implies (e.g. HF DeiTForImageClassification classifies from the cls token).
    hints: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ helpers
def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], str | None]:
    """Find the weights inside a loaded file: (state dict, name of the wrapping key or None)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors (or a dict holding one), found a {type(obj).__name__}")
    if _is_tensor_dict(obj):
        sd, wrapper = dict(obj), None
    else:
        # 'model' is the official script's key (its EMA copy, 'model_ema', is ignored); 'state_dict' is OpenMMLab's
        # and timm's training checkpoints'.
        for key in ("model", "state_dict", "module", "state_dict_ema", "model_ema"):
            if key in obj and _is_tensor_dict(obj[key]):
                sd, wrapper = dict(obj[key]), key
                break
        else:
            found = ", ".join(f"{k!r} ({type(v).__name__})" for k, v in list(obj.items())[:12])
            raise CheckpointError(
                "found no state dict in this file: expected a dict of tensors or one under 'model' or "
                f"'state_dict'; top-level entries: {found}"
            )
    # Wrappers of the training loop: DistributedDataParallel ('module.') and torch.compile ('_orig_mod.').
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd, wrapper


def key_prefixes(keys: Iterable[str], limit: int = 12) -> str:
    """The first two dotted parts of the keys (block numbers folded), most frequent first: for error messages."""
    counts: Counter[str] = Counter()
    for k in keys:
        parts = re.sub(r"\.\d+(\.|$)", r".{i}\1", k).split(".")
        counts[".".join(parts[:2]) + ("." if len(parts) > 2 else "")] += 1
    shown = [p for p, _ in counts.most_common(limit)]
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    return ", ".join(shown) + more


def _hf_prefix(keys: set[str]) -> str | None:
    for prefix in ("deit.", "vit.", ""):
        if f"{prefix}embeddings.patch_embeddings.projection.weight" in keys:
            return prefix
    return None


_OFFICIAL_LAYER_SCALE = re.compile(r"^blocks\.\d+\.gamma_[12]$")


def detect_layout(state_dict: Mapping[str, torch.Tensor], wrapper: str | None = None) -> str:
    """Name the layout from the keys: openmmlab, hf-legacy, hf-v5, or official/timm (canonical keys)."""
    keys = set(state_dict)
    prefix = _hf_prefix(keys)
    if prefix is not None:
        if any(k.startswith(f"{prefix}encoder.layer.") for k in keys):
            return "hf-legacy"
        return "hf-v5"
    if any(k.startswith("backbone.") for k in keys):
        return "openmmlab"
    if wrapper == "model" or any(_OFFICIAL_LAYER_SCALE.match(k) for k in keys):
        return "official"  # DeiT III's official LayerScale names say so even outside the {'model': ...} wrapper
    return "timm"


def to_canonical(state_dict: Mapping[str, torch.Tensor], layout: str) -> Converted:
    if layout == "official":
        return _from_official(state_dict)
    if layout in ("timm", "deit"):
        return Converted(dict(state_dict), layout)
    if layout == "openmmlab":
        return _from_openmmlab(state_dict)
    if layout in ("hf-legacy", "hf-v5"):
        return _from_hf(state_dict, layout)
    raise CheckpointError(f"unknown layout {layout!r}; {LAYOUT_HELP}")


def _rename(key: str, rules: list[tuple[re.Pattern, str | None]]) -> tuple[bool, str | None]:
    for pattern, repl in rules:
        if pattern.match(key):
            return True, None if repl is None else pattern.sub(repl, key, count=1)
    return False, None


def _rules(pairs: list[tuple[str, str | None]]) -> list[tuple[re.Pattern, str | None]]:
    return [(re.compile(p), r) for p, r in pairs]


def _unrecognised(keys: list[str], layout: str) -> StateDictMismatchError:
    shown = ", ".join(repr(k) for k in keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
    return StateDictMismatchError(f"{layout} checkpoint has keys with no DeiT counterpart: {shown}")


# ------------------------------------------------------------------------------------- official DeiT III, OpenMMLab
# Each layout's names as (canonical, theirs) pairs, read in both directions: "{i}" is a block number, a name ending
# in "." a prefix, any other a whole key. Canonical keys no pair names are the same in that layout.
_OFFICIAL_PAIRS = [
    # models_v2.py's Layer_scale_init_Block: LayerScale as bare parameters of the block.
    ("blocks.{i}.ls1.gamma", "blocks.{i}.gamma_1"),
    ("blocks.{i}.ls2.gamma", "blocks.{i}.gamma_2"),
]
_MMLAB_PAIRS = [
    ("cls_token", "backbone.cls_token"),
    ("dist_token", "backbone.dist_token"),
    ("pos_embed", "backbone.pos_embed"),
    ("patch_embed.proj.", "backbone.patch_embed.projection."),
    ("blocks.{i}.norm1.", "backbone.layers.{i}.ln1."),
    ("blocks.{i}.norm2.", "backbone.layers.{i}.ln2."),
    ("blocks.{i}.attn.qkv.", "backbone.layers.{i}.attn.qkv."),
    ("blocks.{i}.attn.proj.", "backbone.layers.{i}.attn.proj."),
    ("blocks.{i}.mlp.fc1.", "backbone.layers.{i}.ffn.layers.0.0."),
    ("blocks.{i}.mlp.fc2.", "backbone.layers.{i}.ffn.layers.1."),
    # mmpretrain's DeiT3: LayerScale inside the attention and FFN modules.
    ("blocks.{i}.ls1.gamma", "backbone.layers.{i}.attn.gamma1.weight"),
    ("blocks.{i}.ls2.gamma", "backbone.layers.{i}.ffn.gamma2.weight"),
    # The final norm has the same short name as the blocks' first norm: told apart by `layers.{i}.`.
    ("norm.", "backbone.ln1."),
    ("head.", "head.layers.head."),
    ("head_dist.", "head.layers.head_dist."),
]


def _pattern(name: str) -> str:
    return "^" + re.escape(name).replace(re.escape("{i}"), r"(\d+)") + ("" if name.endswith(".") else "$")


def _pair_rules(pairs: list[tuple[str, str]], reverse: bool) -> list[tuple[re.Pattern, str | None]]:
    """Rename rules from (canonical, theirs) pairs: theirs -> canonical (reverse) or canonical -> theirs."""
    return _rules([(_pattern(b if reverse else a), (a if reverse else b).replace("{i}", r"\1")) for a, b in pairs])


_OFFICIAL_TO_CANONICAL = _pair_rules(_OFFICIAL_PAIRS, reverse=True)
_MMLAB_RULES = _pair_rules(_MMLAB_PAIRS, reverse=True) + _rules(
    [
        (r"^head\.fc\.", "head."),  # mmcls LinearClsHead
        # mmpretrain's data preprocessor normalisation buffers: not weights.
        (r"^data_preprocessor\.", None),
    ]
)
_TO_THEIRS = {"official": _pair_rules(_OFFICIAL_PAIRS, reverse=False), "openmmlab": _pair_rules(_MMLAB_PAIRS, False)}
# The weights-only layouts from_canonical writes.
WRITABLE_LAYOUTS: tuple[str, ...] = ("official", "timm", "openmmlab")


def from_canonical(state_dict: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Canonical keys -> the ``official`` (DeiT III's LayerScale as ``blocks.{i}.gamma_1``), ``timm`` (canonical)
    or ``openmmlab`` (mmpretrain's DeiT / DeiT3) names; a key the layout has no name for is an error."""
    if layout not in WRITABLE_LAYOUTS:
        raise ValueError(f"cannot write the {layout!r} layout here; one of {WRITABLE_LAYOUTS}")
    rules = _TO_THEIRS.get(layout, [])
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        ok, new = _rename(k, rules)
        if not ok and layout == "openmmlab":
            raise StateDictMismatchError(f"no OpenMMLab counterpart for key {k!r} (the layout has DeiT ViT keys only)")
        out[new if ok and new is not None else k] = v
    return out


def _from_official(state_dict: Mapping[str, torch.Tensor]) -> Converted:
    out = {}
    for k, v in state_dict.items():
        ok, new = _rename(k, _OFFICIAL_TO_CANONICAL)
        out[new if ok and new is not None else k] = v
    renamed = sum(1 for k in state_dict if k not in out)
    notes = [f"renamed {renamed} LayerScale tensors (gamma_1/gamma_2 -> ls1/ls2.gamma)"] if renamed else []
    return Converted(out, "official", notes)


def _from_openmmlab(state_dict: Mapping[str, torch.Tensor]) -> Converted:
    out: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for k, v in state_dict.items():
        ok, new = _rename(k, _MMLAB_RULES)
        if not ok:
            bad.append(k)
        elif new is not None:
            out[new] = v
    if bad:
        raise _unrecognised(bad, "openmmlab")
    notes = []
    if "dist_token" in out:
        notes.append("OpenMMLab's DeiT head always averages both heads: head_mode 'avg'")
    return Converted(out, "openmmlab", notes)


# --------------------------------------------------------------------------------------- HF transformers
# The one table of HF names: canonical name (or prefix) -> (transformers <= 4.x name, 5.x name). Reading builds its
# rename rules from it and writing maps through it, so the two directions cannot drift apart. Inside a block the
# canonical q/k/v are the three row blocks of the fused qkv projection.
_HF_EMBED_NAMES = {
    "cls_token": "embeddings.cls_token",
    "dist_token": "embeddings.distillation_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.": "embeddings.patch_embeddings.projection.",
    "norm.": "layernorm.",
}
_HF_BLOCKS = {"hf-legacy": "encoder.layer", "hf-v5": "layers"}
_HF_BLOCK_NAMES = {
    "norm1.": ("layernorm_before.", "layernorm_before."),
    "norm2.": ("layernorm_after.", "layernorm_after."),
    "attn.q.": ("attention.attention.query.", "attention.q_proj."),
    "attn.k.": ("attention.attention.key.", "attention.k_proj."),
    "attn.v.": ("attention.attention.value.", "attention.v_proj."),
    "attn.proj.": ("attention.output.dense.", "attention.o_proj."),
    "mlp.fc1.": ("intermediate.dense.", "mlp.fc1."),
    "mlp.fc2.": ("output.dense.", "mlp.fc2."),
}
# HF classes' heads: DeiTForImageClassificationWithTeacher ("teacher"), DeiT/ViTForImageClassification ("single").
_HF_HEAD_NAMES = {"teacher": {"head.": "cls_classifier.", "head_dist.": "distillation_classifier."},
                  "single": {"head.": "classifier."}, "none": {}}
# HF tensors with no DeiT counterpart: the masked-image-modelling token, DeiTModel's pooler.
_HF_ONLY = ("embeddings.mask_token", "pooler.")


def _hf_body_rules(layout: str) -> list[tuple[re.Pattern, str | None]]:
    column = 0 if layout == "hf-legacy" else 1
    blocks = re.escape(_HF_BLOCKS[layout])
    pairs: list[tuple[str, str | None]] = [
        (f"^{re.escape(theirs)}{'' if theirs.endswith('.') else '$'}", ours) for ours, theirs in _HF_EMBED_NAMES.items()
    ]
    pairs += [(f"^{blocks}\\.(\\d+)\\.{re.escape(names[column])}", f"blocks.\\1.{ours}")
              for ours, names in _HF_BLOCK_NAMES.items()]
    pairs += [(f"^{re.escape(name)}", None) for name in _HF_ONLY]
    return _rules(pairs)


_HF_BODY_RULES = {layout: _hf_body_rules(layout) for layout in _HF_BLOCKS}
_HF_HEAD_RULES = _rules([(f"^{re.escape(theirs)}", ours) for heads in ("teacher", "single")
                         for ours, theirs in _HF_HEAD_NAMES[heads].items()])
_QKV = re.compile(r"^blocks\.(\d+)\.attn\.([qkv])\.(weight|bias)$")


def _from_hf(state_dict: Mapping[str, torch.Tensor], layout: str) -> Converted:
    prefix = _hf_prefix(set(state_dict)) or ""
    body_rules = _HF_BODY_RULES[layout]
    out: dict[str, torch.Tensor] = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    bad: list[str] = []
    dropped: list[str] = []
    for k, v in state_dict.items():
        ok, new = False, None
        if k.startswith(prefix):  # every key when the file is a bare DeiTModel / ViTModel (no prefix)
            ok, new = _rename(k[len(prefix) :], body_rules)
        if not ok:
            ok, new = _rename(k, _HF_HEAD_RULES)
        if not ok:
            bad.append(k)
            continue
        if new is None:
            dropped.append(k)
            continue
        m = _QKV.match(new)
        if m:
            parts.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
        else:
            out[new] = v
    if bad:
        raise _unrecognised(bad, layout)
    for (block, kind), qkv in sorted(parts.items()):
        missing = [n for n in "qkv" if n not in qkv]
        if missing:
            raise StateDictMismatchError(
                f"{layout} checkpoint: block {block} has attention {kind} for {sorted(qkv)} but not {missing}"
            )
        # Fused qkv rows are [q | k | v], each D rows, heads contiguous inside each: the same order HF splits in.
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    notes = [f"fused the separate query/key/value projections of {len({b for b, _ in parts})} blocks into qkv"]
    hints: dict[str, Any] = {}
    if dropped:
        notes.append(f"dropped {len(dropped)} HF-only tensors with no DeiT counterpart ({', '.join(dropped[:3])})")
    if "dist_token" in out and "head.weight" in out and "head_dist.weight" not in out:
        # DeiTForImageClassification: a distillation token, but one classifier, on the class token.
        out["head_dist.weight"] = out["head.weight"].clone()
        if "head.bias" in out:
            out["head_dist.bias"] = out["head.bias"].clone()
        hints["head_mode"] = "cls"
        notes.append(
            "HF DeiTForImageClassification classifies from the class token only: head_mode 'cls', and head_dist "
            "(absent from the file) starts as a copy of head"
        )
    return Converted(out, layout, notes, hints)


def from_canonical_hf(
    state_dict: Mapping[str, torch.Tensor], *, layout: str = "v5", prefix: str = "deit", heads: str = "teacher"
) -> dict[str, torch.Tensor]:
    """Canonical ViT keys -> HF transformers keys, through the table reading uses.

    layout: "v5" (transformers 5.x) or "legacy" (<= 4.x); prefix: "deit" or "vit"; heads: "teacher"
    (cls_classifier + distillation_classifier), "single" (classifier on the class token) or "none".
    """
    if layout not in ("v5", "legacy"):
        raise ValueError(f"HF layout must be 'v5' or 'legacy', got {layout!r}")
    column, blocks = (1, _HF_BLOCKS["hf-v5"]) if layout == "v5" else (0, _HF_BLOCKS["hf-legacy"])
    p = f"{prefix}." if prefix else ""
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            if rest.startswith("attn.qkv."):  # the fused projection's [q | k | v] row blocks, one HF tensor each
                kind = rest.rsplit(".", 1)[1]
                for name, chunk in zip("qkv", v.chunk(3, dim=0), strict=True):
                    out[f"{p}{blocks}.{i}.{_HF_BLOCK_NAMES[f'attn.{name}.'][column]}{kind}"] = chunk.clone()
                continue
            theirs = _mapped(rest, {ours: names[column] for ours, names in _HF_BLOCK_NAMES.items()})
            if theirs is None:
                raise StateDictMismatchError(f"no HF counterpart for key {k!r}")
            out[f"{p}{blocks}.{i}.{theirs}"] = v
            continue
        theirs = _mapped(k, _HF_EMBED_NAMES)
        if theirs is not None:
            out[p + theirs] = v
            continue
        theirs = _mapped(k, _HF_HEAD_NAMES[heads])
        if theirs is not None:
            out[theirs] = v
        elif not k.startswith(("head.", "head_dist.")):  # a head the chosen HF class does not have is left out
            raise StateDictMismatchError(f"no HF counterpart for key {k!r}")
    return out


def _mapped(key: str, names: Mapping[str, str]) -> str | None:
    """``key`` renamed by the first entry whose canonical name it is (or starts with, for a prefix)."""
    for ours, theirs in names.items():
        if key == ours or (ours.endswith(".") and key.startswith(ours)):
            return theirs + key[len(ours):]
    return None
