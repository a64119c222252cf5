"""DeiT III ("Revenge of the ViT", Touvron et al. 2022): its ViTs under timm's names, their releases, and the
distilled variants (DeiT's distillation token and head on the same LayerScale model).

The architecture is the official ``models_v2.py`` one (``deit_{size}_patch16_LS``, ``deit_huge_patch14_LS``): qkv
bias, LayerNorm eps 1e-6, LayerScale on both residual branches initialised at 1e-4 (timm's ``deit3_*`` use 1e-6;
once trained weights are loaded the initial value plays no part), the position embedding added to the patch tokens
only with the class token concatenated after it, and the same stochastic-depth rate in every block.
"""

from __future__ import annotations

from deit.models.preprocessing import Preprocessing
from deit.models.registry import ModelEntry, Release, register_model
from deit.models.vit_config import ViTConfig

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/deit/"
MMPRETRAIN_URL = "https://download.openmmlab.com/mmclassification/v0/deit3/"
# LayerScale's initial value in the official models_v2.py (vit_models' init_scale).
INIT_VALUES = 1e-4
# timm's evaluation crop for the ImageNet-1k-only releases at 224 px; the 384 px and the ImageNet-21k-pretrained
# releases see the whole image.
FB_IN1K_CROP_PCT = 0.9

# size: (embed_dim, depth, num_heads, patch_size, resolutions). ViT-H has 80-dimensional heads: the weights cannot
# say so, and a reader takes the head count from here (Family.unrecorded).
DEIT3_SIZES: dict[str, tuple[int, int, int, int, tuple[int, ...]]] = {
    "small": (384, 12, 6, 16, (224, 384)),
    "medium": (512, 12, 8, 16, (224,)),
    "base": (768, 12, 12, 16, (224, 384)),
    "large": (1024, 24, 16, 16, (224, 384)),
    "huge": (1280, 32, 16, 14, (224,)),
}
# ImageNet-1k top-1 of the official releases (README_revenge.md): trained on ImageNet-1k, and pretrained on
# ImageNet-21k then fine-tuned on ImageNet-1k.
_TOP1: dict[tuple[str, int], tuple[float, float]] = {
    ("small", 224): (81.4, 83.1), ("small", 384): (83.4, 84.8), ("medium", 224): (83.0, 84.5),
    ("base", 224): (83.8, 85.7), ("base", 384): (85.0, 86.7), ("large", 224): (84.9, 87.0),
    ("large", 384): (85.8, 87.7), ("huge", 224): (85.2, 87.2),
}
# mmpretrain's copies of the same weights in its key layout (configs/deit3/README.md); the 8 hex digits of each
# name are its sha256 prefix, so these downloads are checked like the DeiT releases.
_MMPRETRAIN: dict[tuple[str, int], tuple[str, str]] = {
    ("small", 224): ("deit3-small-p16_3rdparty_in1k_20221008-0f7c70cf.pth",
                     "deit3-small-p16_in21k-pre_3rdparty_in1k_20221009-dcd90827.pth"),
    ("small", 384): ("deit3-small-p16_3rdparty_in1k-384px_20221008-a2c1a0c7.pth",
                     "deit3-small-p16_in21k-pre_3rdparty_in1k-384px_20221009-de116dd7.pth"),
    ("medium", 224): ("deit3-medium-p16_3rdparty_in1k_20221008-3b21284d.pth",
                      "deit3-medium-p16_in21k-pre_3rdparty_in1k_20221009-472f11e2.pth"),
    ("base", 224): ("deit3-base-p16_3rdparty_in1k_20221008-60b8c8bf.pth",
                    "deit3-base-p16_in21k-pre_3rdparty_in1k_20221009-87983ca1.pth"),
    ("base", 384): ("deit3-base-p16_3rdparty_in1k-384px_20221009-e19e36d4.pth",
                    "deit3-base-p16_in21k-pre_3rdparty_in1k-384px_20221009-5e4e37b9.pth"),
    ("large", 224): ("deit3-large-p16_3rdparty_in1k_20221009-03b427ea.pth",
                     "deit3-large-p16_in21k-pre_3rdparty_in1k_20221009-d8d27084.pth"),
    ("large", 384): ("deit3-large-p16_3rdparty_in1k-384px_20221009-4317ce62.pth",
                     "deit3-large-p16_in21k-pre_3rdparty_in1k-384px_20221009-75fea03f.pth"),
    ("huge", 224): ("deit3-huge-p14_3rdparty_in1k_20221009-e107bcb7.pth",
                    "deit3-huge-p14_in21k-pre_3rdparty_in1k_20221009-19b8a535.pth"),
}


def official_filename(size: str, img_size: int, pretraining: str) -> str:
    """The official release's file name (``deit_3_small_224_1k.pth``); ``pretraining`` is "1k" or "21k". The
    ImageNet-21k ViT-H is a second version (``_v1``), as the official code, README and timm all name it."""
    version = "_v1" if size == "huge" and pretraining == "21k" else ""
    return f"deit_3_{size}_{img_size}_{pretraining}{version}.pth"


def _releases(size: str, img_size: int) -> tuple[Release, ...]:
    in1k, in21k = _TOP1[(size, img_size)]
    mm_in1k, mm_in21k = _MMPRETRAIN[(size, img_size)]
    what = f"DeiT III ViT-{size[0].upper()} {img_size}px"
    return (
        Release("fb_in22k_ft_in1k", OFFICIAL_URL + official_filename(size, img_size, "21k"), crop_pct=1.0,
                description=f"{what}, ImageNet-21k pretrained, ImageNet-1k top-1 {in21k}"),
        Release("mmpretrain_in1k", MMPRETRAIN_URL + mm_in1k,
                description=f"{what}, ImageNet-1k top-1 {in1k} (mmpretrain's copy)"),
        Release("mmpretrain_in22k_ft_in1k", MMPRETRAIN_URL + mm_in21k, crop_pct=1.0,
                description=f"{what}, ImageNet-21k pretrained, ImageNet-1k top-1 {in21k} (mmpretrain's copy)"),
    )


def _register(size: str, img_size: int, distilled: bool) -> None:
    dim, depth, heads, patch, _ = DEIT3_SIZES[size]
    name = f"deit3_{size}_{'distilled_' if distilled else ''}patch{patch}_{img_size}"
    alias = f"deit3-{size}{'-distilled' if distilled else ''}{'-384' if img_size == 384 else ''}"
    official = (f"deit_{size}_patch{patch}_LS",) if img_size == 224 and not distilled else ()
    config = ViTConfig(img_size=img_size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                       distilled=distilled, init_values=INIT_VALUES, prefix_pos_embed=False,
                       drop_path_schedule="uniform")
    crop = FB_IN1K_CROP_PCT if img_size < 384 else 1.0
    what = f"DeiT III ViT-{size[0].upper()} {img_size}px"
    if distilled:
        description = f"{what} with a distillation token (DeiT's, on the LayerScale model; no released weights)"
        release: dict = {}
    else:
        description = f"{what}, ImageNet-1k top-1 {_TOP1[(size, img_size)][0]}"
        release = dict(pretrained_url=OFFICIAL_URL + official_filename(size, img_size, "1k"), default_tag="fb_in1k",
                       releases=_releases(size, img_size))
    register_model(ModelEntry(name=name, family="vit", config=config,
                              preprocessing=Preprocessing(input_size=img_size, crop_pct=crop),
                              aliases=(alias, *official), description=description, **release))


for _distilled in (False, True):
    for _size, (*_, _resolutions) in DEIT3_SIZES.items():
        for _img_size in _resolutions:
            _register(_size, _img_size, _distilled)
