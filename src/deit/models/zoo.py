"""Every named model: the eight DeiT variants of the paper (official names and the seed's short aliases)."""

from __future__ import annotations

from deit.models.preprocessing import Preprocessing
from deit.models.registry import Family, ModelEntry, register_family, register_model
from deit.models.vit import ViTConfig, VisionTransformer

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/deit/"

register_family(Family("vit", ViTConfig, lambda cfg, pre: VisionTransformer(cfg, pre)))

_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
_HASHES = {
    "deit_tiny_patch16_224": "a1311bcf",
    "deit_small_patch16_224": "cd65a155",
    "deit_base_patch16_224": "b5f2ef4d",
    "deit_tiny_distilled_patch16_224": "b40b3cf7",
    "deit_small_distilled_patch16_224": "649709d9",
    "deit_base_distilled_patch16_224": "df68dfff",
    "deit_base_patch16_384": "8de9b5d1",
    "deit_base_distilled_patch16_384": "d0272ac0",
}
_TOP1 = {
    "deit_tiny_patch16_224": 72.2,
    "deit_small_patch16_224": 79.8,
    "deit_base_patch16_224": 81.8,
    "deit_tiny_distilled_patch16_224": 74.5,
    "deit_small_distilled_patch16_224": 81.2,
    "deit_base_distilled_patch16_224": 83.4,
    "deit_base_patch16_384": 83.1,
    "deit_base_distilled_patch16_384": 85.2,
}


def _register_deit(size: str, distilled: bool, img_size: int) -> None:
    dim, heads = _SIZES[size]
    name = f"deit_{size}_{'distilled_' if distilled else ''}patch16_{img_size}"
    alias = f"deit-{size}{'-distilled' if distilled else ''}{'-384' if img_size == 384 else ''}"
    config = ViTConfig(img_size=img_size, embed_dim=dim, depth=12, num_heads=heads, distilled=distilled)
    # The official 384 px models are evaluated on the full image (crop_pct 1.0).
    pre = Preprocessing(input_size=img_size, crop_pct=0.875 if img_size == 224 else 1.0)
    register_model(
        ModelEntry(
            name=name,
            family="vit",
            config=config,
            preprocessing=pre,
            aliases=(alias,),
            pretrained_url=f"{OFFICIAL_URL}{name}-{_HASHES[name]}.pth",
            description=f"DeiT-{size[0].upper()}{' distilled' if distilled else ''} {img_size}px, "
            f"ImageNet-1k top-1 {_TOP1[name]}",
        )
    )


for _distilled in (False, True):
    for _size in ("tiny", "small", "base"):
        _register_deit(_size, _distilled, 224)
    _register_deit("base", _distilled, 384)
