"""Training tests run single-threaded in-process (pytest-xdist runs several at once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deit.checkpoints import save_checkpoint
from deit.models import build_architecture


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A fresh 4-class convnet teacher for 16 px images, saved once per test module (the tiny runs' teacher)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=4, img_size=16), path)
    return path


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory) -> Path:
    """A CIFAR-like image folder users have: train/ and test/ class folders of 32 px JPEGs (3 classes, 8 + 2 each)."""
    root = tmp_path_factory.mktemp("cifar_like")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 2)):
        for c, name in enumerate(("cat", "dog", "ship")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.jpg")
    return root
