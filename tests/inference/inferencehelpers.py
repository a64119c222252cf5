"""Tiny random DeiTs and test images for the inference tests."""

import numpy as np
from PIL import Image

from deit.models import VisionTransformer, ViTConfig

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def tiny(distilled: bool = True, **kw) -> VisionTransformer:
    """A random tiny DeiT (32 px, 4x4 patches of 8 px) in eval mode."""
    return VisionTransformer(ViTConfig(**{**TINY, "distilled": distilled, **kw})).eval()


def asymmetric_rgb(width: int = 48, height: int = 30, seed: int = 0) -> Image.Image:
    """A non-square image whose halves differ strongly, so a rotation or flip changes what the model sees."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    a[:, : width // 3] = (250, 20, 20)
    a[: height // 4] = (20, 20, 250)
    return Image.fromarray(a, "RGB")
