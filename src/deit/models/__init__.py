"""Models: the DeiT Vision Transformer, convnet teachers, and the registry that names them."""

from deit.models import zoo  # noqa: F401  (registers the named models)
from deit.models.attention import ATTN_IMPLS, AttnImpl
from deit.models.complexity import Complexity, count_params, measure
from deit.models.contract import HEAD_MODES, Classifier, combine_heads, has_two_heads, head_outputs, training_outputs
from deit.models.pos_embed import resample_pos_embed
from deit.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from deit.models.registry import FAMILIES, build_architecture, build_model, describe_model, get_entry, list_models
from deit.models.regnet import RegNet, RegNetConfig
from deit.models.resnet import ResNet, ResNetConfig
from deit.models.vit import VisionTransformer, ViTConfig
from deit.models.vit_blocks import set_attn_impl

__all__ = [
    "ATTN_IMPLS",
    "FAMILIES",
    "HEAD_MODES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AttnImpl",
    "Classifier",
    "Complexity",
    "Preprocessing",
    "RegNet",
    "RegNetConfig",
    "ResNet",
    "ResNetConfig",
    "ViTConfig",
    "VisionTransformer",
    "build_model",
    "combine_heads",
    "count_params",
    "build_architecture",
    "describe_model",
    "get_entry",
    "has_two_heads",
    "head_outputs",
    "list_models",
    "measure",
    "resample_pos_embed",
    "set_attn_impl",
    "training_outputs",
]


def __getattr__(name: str):
    # deit.models.create_model was renamed: two create_models (this one without weights) read as one.
    if name == "create_model":
        raise AttributeError("deit.models.create_model is now deit.models.build_architecture (an architecture with "
                             "fresh weights); for release or local weights use deit.create_model(name, pretrained=...)")
    raise AttributeError(f"module 'deit.models' has no attribute {name!r}")
