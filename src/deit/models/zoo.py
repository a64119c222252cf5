"""Every named model: the DeiT paper's eight variants (official names, with short aliases such as ``deit-small``),
DeiT III's (``zoo_deit3.py``), the convnet teachers and the CIFAR-10 nets (``deit info --list`` shows them all)."""

from __future__ import annotations

from deit.models.preprocessing import Preprocessing, default_crop_pct
from deit.models.registry import Family, ModelEntry, register_family, register_model
from deit.models.vit import VisionTransformer
from deit.models.vit_config import DEIT_WIDTHS, ViTConfig, conventional_num_heads, infer_config

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/deit/"

register_family(Family("vit", ViTConfig, lambda cfg, pre: VisionTransformer(cfg, pre), infer_config=infer_config,
                       title="DeiT / DeiT III ViT", unrecorded=("num_heads",)))

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
    dim = DEIT_WIDTHS[size]
    name = f"deit_{size}_{'distilled_' if distilled else ''}patch16_{img_size}"
    alias = f"deit-{size}{'-distilled' if distilled else ''}{'-384' if img_size == 384 else ''}"
    config = ViTConfig(img_size=img_size, embed_dim=dim, depth=12, num_heads=conventional_num_heads(dim),
                       distilled=distilled)
    pre = Preprocessing(input_size=img_size, crop_pct=default_crop_pct(img_size))
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


# ------------------------------------------------------------------------------------------------- DeiT III
from deit.models import zoo_deit3  # noqa: E402, F401, I001  (registers DeiT III's models)

# ------------------------------------------------------------------------------------------ convnet teachers
from deit.models import regnet, resnet  # noqa: E402

register_family(Family("regnet", regnet.RegNetConfig, regnet.RegNet, infer_config=regnet.infer_config,
                       title="RegNetY"))
register_family(Family("resnet", resnet.ResNetConfig, resnet.ResNet, infer_config=resnet.infer_config,
                       title="ResNet"))

_TIMM_REGNET_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-regnet/"
# name: (w0, wa, wm, group_size, depth, pretrained file, description); RegNetY: SE ratio 0.25 of the block input.
_REGNETY = {
    "regnety_002": (24, 36.44, 2.49, 8, 13, _TIMM_REGNET_URL + "regnety_002-e68ca334.pth", "RegNetY-200MF"),
    "regnety_004": (48, 27.89, 2.09, 8, 16, _TIMM_REGNET_URL + "regnety_004-0db870e6.pth", "RegNetY-400MF"),
    "regnety_008": (56, 38.84, 2.4, 16, 14, _TIMM_REGNET_URL + "regnety_008-dc900dbe.pth", "RegNetY-800MF"),
    "regnety_160": (200, 106.23, 2.48, 112, 18, f"{OFFICIAL_URL}regnety_160-a5fe301d.pth",
                    "RegNetY-16GF, the DeiT paper's teacher (ImageNet-1k top-1 82.9)"),
}
for _name, (_w0, _wa, _wm, _group, _depth, _url, _desc) in _REGNETY.items():
    register_model(
        ModelEntry(
            name=_name,
            family="regnet",
            config=regnet.RegNetConfig(depth=_depth, w0=_w0, wa=_wa, wm=_wm, group_size=_group, se_ratio=0.25),
            preprocessing=Preprocessing(input_size=224, crop_pct=0.875, interpolation="bicubic"),
            pretrained_url=_url,
            description=_desc,
        )
    )

register_model(
    ModelEntry(
        name="resnet_digits",
        family="resnet",
        config=resnet.ResNetConfig(widths=(24, 48, 96), blocks=(1, 1, 1), stem="small", num_classes=10),
        # The embedded digits data: RGB upsampled to 32 px, whole image (no crop).
        preprocessing=Preprocessing(input_size=32, crop_pct=1.0, interpolation="bilinear"),
        description="ResNet 24-48-96 with a 32 px stem (174,274 params): the convnet teacher for digits",
    )
)
_TORCHVISION_URL = "https://download.pytorch.org/models/"
for _name, _blocks, _file, _top1 in (("resnet18", (2, 2, 2, 2), "resnet18-f37072fd.pth", 69.76),
                                     ("resnet34", (3, 4, 6, 3), "resnet34-b627a593.pth", 73.31)):
    register_model(
        ModelEntry(
            name=_name,
            family="resnet",
            config=resnet.ResNetConfig(widths=(64, 128, 256, 512), blocks=_blocks, stem="imagenet"),
            preprocessing=Preprocessing(input_size=224, crop_pct=0.875, interpolation="bilinear"),
            pretrained_url=_TORCHVISION_URL + _file,
            description=f"torchvision {_name} (ImageNet-1k top-1 {_top1})",
        )
    )


# ------------------------------------------------------------------------------------- teachers for 32 px images
from deit.models import resnet9  # noqa: E402

register_family(Family("resnet9", resnet9.ResNet9Config, resnet9.ResNet9, infer_config=resnet9.infer_config,
                       title="ResNet-9"))
register_model(
    ModelEntry(
        name="resnet18_cifar",
        family="resnet",
        config=resnet.ResNetConfig(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), stem="small", num_classes=10),
        preprocessing=resnet9.cifar_preprocessing(),
        description="CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, 32 -> 4 px (11,173,962 params)",
    )
)
for _name, _widths, _desc in (
    ("resnet9", (64, 128, 256, 512), "ResNet-9 (Myrtle's DAWNBench CIFAR net, 6,573,120 params)"),
    ("resnet9_small", (32, 64, 128, 256), "ResNet-9 at half width for CPU budgets (1,646,112 params)"),
):
    register_model(ModelEntry(name=_name, family="resnet9", config=resnet9.ResNet9Config(widths=_widths),
                              preprocessing=resnet9.cifar_preprocessing(), description=_desc))

from deit.models import airbench  # noqa: E402

register_family(Family("airbench", airbench.AirbenchConfig, airbench.Airbench, infer_config=airbench.infer_config))
for _name, _widths, _desc in (
    ("airbench94_cifar", (64, 256, 256), "airbench's CIFAR-10 net (94% in 10 epochs on a GPU; 1,972,792 params)"),
    ("airbench93_cifar", (64, 128, 128), "airbench's CIFAR-10 net at airbench93's widths (93% in 11 epochs; 569,656 "
                                   "params)"),
):
    register_model(ModelEntry(name=_name, family="airbench", config=airbench.AirbenchConfig(widths=_widths),
                              preprocessing=resnet9.cifar_preprocessing(), description=_desc))
