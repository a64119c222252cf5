"""The registry of data sets: the built-in names are one Literal, every fact about a data set is asked of its spec,
and a data set registered from outside the package is read by configs, format detection and --data like a
built-in one."""

from __future__ import annotations

import os
import subprocess
import sys
import typing

import numpy as np
import pytest
from datahelpers import make_imagefolder
from PIL import Image

from deit.data import (
    BUILTIN_DATASETS,
    DataConfig,
    DatasetName,
    ImageDataset,
    build_dataset,
    dataset_names,
    dataset_spec,
    register_dataset,
)
from deit.data.formats import data_config_for, detect_format, follow_root


class Pixels(ImageDataset):
    """A user's data set read from one ``.npy`` file of (N, H, W, 3) uint8 images; labels = index mod 2."""

    def __init__(self, path: str) -> None:
        self.images = np.load(path)
        super().__init__(["even", "odd"], [i % 2 for i in range(len(self.images))])

    def load(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), self.targets[index]


@pytest.fixture(scope="module", autouse=True)
def _registered():
    if "pixels" not in dataset_names():
        register_dataset("pixels", lambda cfg, split: Pixels(cfg.root), reads_root=True,
                         detect=lambda path: path.endswith(".npy"), describe_root=lambda path: "a pixels file")
    if "broken" not in dataset_names():
        register_dataset("broken", lambda cfg, split: [1, 2, 3])


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8))
    return path


def test_the_literal_names_the_built_ins_registered_first():
    assert typing.get_args(DatasetName) == BUILTIN_DATASETS
    assert dataset_names()[:len(BUILTIN_DATASETS)] == BUILTIN_DATASETS
    # Registered as soon as anything of deit.data is imported, whatever comes first.
    code = ("from deit.data.config import DataConfig; DataConfig(dataset='imagefolder', root='x'); "
            "from deit.data.registry import dataset_names, BUILTIN_DATASETS; assert set(BUILTIN_DATASETS) <= "
            "set(dataset_names())")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        sys.path)}, timeout=120)


def test_facts_are_asked_of_the_spec():
    assert dataset_spec("cifar10").downloadable and not dataset_spec("cifar10").needs_root
    assert dataset_spec("imagefolder").needs_root and not dataset_spec("digits").reads_root
    with pytest.raises(ValueError, match="reads files: give its root"):
        DataConfig(dataset="csv")
    with pytest.raises(ValueError, match="dataset must be one of digits, synthetic, .*imagefolder.*got 'imagenet'"):
        DataConfig(dataset="imagenet")


def test_a_registered_data_set_is_detected_named_and_built_like_a_built_in_one(npy, tmp_path):
    assert detect_format(npy) == "pixels"
    cfg = data_config_for(str(npy), batch_size=2)
    assert cfg.dataset == "pixels" and cfg.root == str(npy)
    train = build_dataset(cfg, "train")
    assert len(train) == 6 and train.classes == ["even", "odd"]
    # data.root decides the format of a built-in data set's config, and says so in its own words.
    cfg, line = follow_root(DataConfig(dataset="cifar10", root=str(npy)))
    assert cfg.dataset == "pixels" and line == f"data: {npy} holds a pixels file: data.dataset=pixels (the config " \
                                                "named cifar10)"
    # train_per_class works on it like on any data set.
    assert len(build_dataset(DataConfig(dataset="pixels", root=str(npy), train_per_class=1), "train")) == 2
    # The built-in formats are still found first: a folder of class folders is an imagefolder.
    folder = make_imagefolder(tmp_path / "ds", {"train": {"a": 1}, "val": {"a": 1}})
    assert detect_format(folder) == "imagefolder"


def test_a_data_set_that_reads_its_root_its_own_way_keeps_its_name(npy):
    register_dataset("own-root", lambda cfg, split: Pixels(cfg.root), reads_root=True, replace=True)
    cfg = DataConfig(dataset="own-root", root=str(npy))
    assert follow_root(cfg) == (cfg, None)
    with pytest.raises(ValueError, match="reads files"):
        DataConfig(dataset="own-root")


def test_a_builder_must_return_an_image_dataset():
    with pytest.raises(TypeError, match="the builder of data set 'broken' returned list, not a deit.data.ImageDataset"):
        build_dataset(DataConfig(dataset="broken"), "train")
    with pytest.raises(ValueError, match="a data set name is letters"):
        register_dataset("my set", lambda cfg, split: None)
    with pytest.raises(ValueError, match="must be callable"):
        register_dataset("not-callable", "nope")
