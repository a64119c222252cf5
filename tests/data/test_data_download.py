"""The official CIFAR archives: downloaded once into a cache directory and checked; offline, a message that says
what to fetch by hand (tests never touch the network)."""

import dataclasses
import hashlib
import shutil
import urllib.error

import pytest
from datahelpers import make_cifar

from deit.data import DataConfig, DataError, build_dataset, download


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _offline(url, dst):
    raise urllib.error.URLError("no network here")


def test_offline_the_error_names_the_url_the_md5_and_where_to_put_it(cache, monkeypatch):
    monkeypatch.setattr(download, "_fetch", _offline)
    with pytest.raises(DataError) as info:
        build_dataset(DataConfig(dataset="cifar10"))
    msg = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg
    assert str(cache / "cifar-10-python.tar.gz") in msg and "data.root=" in msg and "no network here" in msg


def test_an_archive_in_the_cache_is_checked_then_read(cache, tmp_path, monkeypatch):
    fake = make_cifar(tmp_path / "src", "cifar10", n_per_batch=3)
    cache.mkdir()
    shutil.copy(fake, cache / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(fake.read_bytes()).hexdigest()
    monkeypatch.setattr(download, "_fetch", _offline)  # found in the cache: nothing is fetched
    monkeypatch.setitem(download.ARCHIVES, "cifar10", dataclasses.replace(download.ARCHIVES["cifar10"], md5=md5))
    train = build_dataset(DataConfig(dataset="cifar10"), "train")
    assert len(train) == 15 and len(train.classes) == 10
    (cache / "cifar-10-python.tar.gz").write_bytes(fake.read_bytes()[:-100])  # corrupt it
    with pytest.raises(DataError, match="md5 .* is not the published .*delete it"):
        build_dataset(DataConfig(dataset="cifar10"), "train")


def test_a_download_with_a_wrong_checksum_is_removed(cache, tmp_path, monkeypatch):
    fake = make_cifar(tmp_path / "src", "cifar100", n_per_batch=2)
    calls = []

    def fetch(url, dst):
        calls.append(url)
        shutil.copy(fake, dst)

    monkeypatch.setattr(download, "_fetch", fetch)
    with pytest.raises(DataError, match="not the published eb9058c3a382ffc7106e4002c42a8d85"):
        build_dataset(DataConfig(dataset="cifar100"), "train")
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert not (cache / "cifar-100-python.tar.gz").exists()  # never left for the next run to trust
