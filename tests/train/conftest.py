"""Training tests run single-threaded in-process (pytest-xdist runs several at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
