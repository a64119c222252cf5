import pytest
from datahelpers import make_imagefolder

from deit.models import Preprocessing


@pytest.fixture
def folder(tmp_path):
    return make_imagefolder(tmp_path / "ds", {"train": {"cat": 4, "dog": 3, "ant": 2}, "val": {"cat": 2, "ant": 1}})


@pytest.fixture
def pp32():
    return Preprocessing(input_size=32)
