import numpy as np
import pytest
from datahelpers import make_cifar, make_imagefolder, write_image

from deit.data import DataConfig, DataError, build_dataset


def test_imagefolder_train_val_layout(folder):
    cfg = DataConfig(dataset="imagefolder", root=str(folder))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert train.classes == ["ant", "cat", "dog"]  # sorted like torchvision, so indices match other tools
    assert len(train) == 9 and sorted(set(train.targets)) == [0, 1, 2]
    assert val.classes == train.classes and len(val) == 3
    assert sorted(val.targets) == [0, 1, 1]  # val's "cat" keeps train's index although val has no "dog"
    img, label = train[0]
    assert img.mode == "RGB" and img.size == (40, 30) and label == 0


def test_imagefolder_one_folder_split_is_stratified_and_seeded(tmp_path):
    root = make_imagefolder(tmp_path, {"": {"a": 10, "b": 20}, })
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are never classes
    cfg = DataConfig(dataset="imagefolder", root=str(root), val_fraction=0.2, split_seed=3)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert train.classes == ["a", "b"]
    assert len(train) == 24 and len(val) == 6 and sorted(val.targets) == [0, 0, 1, 1, 1, 1]
    files = {train.describe(i) for i in range(len(train))} | {val.describe(i) for i in range(len(val))}
    assert len(files) == 30  # disjoint and complete
    again = build_dataset(cfg, "val")
    assert [again.describe(i) for i in range(6)] == [val.describe(i) for i in range(6)]


@pytest.mark.parametrize("layout, words", [
    ({"train": {"a": 2, "b": 0}, "val": {"a": 1}}, "empty class folder"),
    ({"train": {"a": 2}, "val": {"a": 1, "zebra": 1}}, "zebra"),
    ({"train": {}, "val": {}}, "no class folders"),
])
def test_imagefolder_structural_errors_before_training(tmp_path, layout, words):
    root = make_imagefolder(tmp_path, layout)
    for split, classes in layout.items():
        (root / split).mkdir(exist_ok=True)
        for c in classes:
            (root / split / c).mkdir(exist_ok=True)
    cfg = DataConfig(dataset="imagefolder", root=str(root))
    with pytest.raises(DataError, match=words):
        build_dataset(cfg, "train")
        build_dataset(cfg, "val")


def test_missing_root_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path / "nope")))


def test_csv_names_and_indices(tmp_path):
    for i in range(4):
        write_image(tmp_path / "img" / f"{i}.png")
    (tmp_path / "train.csv").write_text("path,label\nimg/0.png,zebra\nimg/1.png,ant\nimg/2.png,zebra\n")
    (tmp_path / "val.csv").write_text("img/3.png,ant\n")
    cfg = DataConfig(dataset="csv", root=str(tmp_path))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert train.classes == ["ant", "zebra"] and train.targets == [1, 0, 1] and val.targets == [0]
    assert train[1][0].size == (40, 30)
    (tmp_path / "val.csv").write_text("img/3.png,lion\n")
    with pytest.raises(DataError, match="lion"):
        build_dataset(cfg, "val")
    one = tmp_path / "all.csv"
    one.write_text("img/0.png,2\nimg/1.png,0\nimg/2.png,2\nimg/3.png,0\n")
    ds = build_dataset(DataConfig(dataset="csv", root=str(one), val_fraction=0.5), "train")
    assert ds.classes == ["0", "1", "2"] and sorted(ds.targets) == [0, 2]


@pytest.mark.parametrize("kind, archive", [("cifar10", True), ("cifar10", False), ("cifar100", True)])
def test_cifar_from_archive_or_folder(tmp_path, kind, archive):
    root = make_cifar(tmp_path, kind, n_per_batch=4, archive=archive)
    cfg = DataConfig(dataset=kind, root=str(root))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) == (20 if kind == "cifar10" else 4) and len(val) == 4
    assert len(train.classes) == (10 if kind == "cifar10" else 100)
    img, label = val[0]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < len(val.classes)
    # pixel layout: channel planes of 32x32, row-major, as in the release
    import pickle
    test_file = tmp_path / {"cifar10": "cifar-10-batches-py/test_batch", "cifar100": "cifar-100-python/test"}[kind]
    d = pickle.loads(test_file.read_bytes())
    assert np.asarray(img)[0, 1, 2] == d[b"data"][0][2 * 1024 + 1]


def test_cifar_refuses_code_in_pickles(tmp_path):
    root = make_cifar(tmp_path, "cifar10", n_per_batch=2, archive=False)
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="not allowed"):
        build_dataset(DataConfig(dataset="cifar10", root=str(root)), "val")


def test_digits_split_and_subsets():
    cfg = DataConfig(dataset="digits", img_size=16)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (1200, 597) and train.classes == [str(i) for i in range(10)]
    from sklearn.datasets import load_digits

    expected = np.bincount(load_digits().target) * 1200 / 1797  # stratified: class shares kept
    assert np.abs(np.bincount(train.targets, minlength=10) - expected).max() <= 1
    img, _ = train[0]
    assert img.size == (16, 16) and img.mode == "RGB"
    small = DataConfig(dataset="digits", img_size=16, train_per_class=10)
    kept, rest = build_dataset(small, "train"), build_dataset(small, "train_rest")
    assert len(kept) == 100 and np.bincount(kept.targets).tolist() == [10] * 10 and len(rest) == 1100
    assert kept.indices == build_dataset(small, "train").indices  # seeded
    assert not set(kept.indices) & set(rest.indices)


def test_synthetic_is_deterministic():
    cfg = DataConfig(dataset="synthetic", img_size=24, synthetic_classes=3, synthetic_train=9, synthetic_val=6)
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")
    assert len(a) == 9 and a.classes == ["class_0", "class_1", "class_2"] and a.targets[:4] == [0, 1, 2, 0]
    assert np.array_equal(np.asarray(a[4][0]), np.asarray(b[4][0]))
    assert not np.array_equal(np.asarray(a[4][0]), np.asarray(build_dataset(cfg, "val")[4][0]))
