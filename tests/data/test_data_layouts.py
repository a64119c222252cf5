"""The folder layouts users have: train/ with val/, validation/ or test/; one folder split by val_fraction; and the
split sizes `deit data check` says training will use."""

import json

import pytest
from datahelpers import make_imagefolder

from deit.cli import main
from deit.data import DataConfig, DataError, build_dataset
from deit.data.formats import detect_format, follow_root


@pytest.mark.parametrize("held_out", ["test", "validation"])
def test_train_with_test_or_validation_folder_is_the_held_out_split(tmp_path, held_out, capsys):
    root = make_imagefolder(tmp_path / "ds", {"train": {"cat": 3, "dog": 2}, held_out: {"cat": 2, "dog": 1}})
    cfg = DataConfig(dataset="imagefolder", root=str(root))
    val = build_dataset(cfg, "val")
    assert len(val) == 3 and val.classes == ["cat", "dog"]
    assert f"using {held_out}/ as the held-out (val) split" in val.note
    assert all(held_out in val.describe(i) for i in range(len(val)))
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"train/ and {held_out}/" in out and f"{held_out}:" in out and "OK" in out
    assert "training will use: train 5 images, val 3 images" in out


def test_val_folder_wins_over_test(tmp_path):
    root = make_imagefolder(tmp_path / "ds", {"train": {"a": 2}, "val": {"a": 1}, "test": {"a": 4}})
    val = build_dataset(DataConfig(dataset="imagefolder", root=str(root)), "val")
    assert len(val) == 1 and val.note is None


def test_train_folder_without_held_out_names_the_fix(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "ds", {"train": {"a": 2, "b": 2}})
    with pytest.raises(DataError, match=r"no val/, validation/ or test/ folder.*data.root=.*train"):
        build_dataset(DataConfig(dataset="imagefolder", root=str(root)), "val")
    assert main(["data", "check", str(root)]) == 1
    assert "no val/, validation/ or test/" in capsys.readouterr().out


def test_one_image_per_class_is_flagged_before_training(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "photos", {"": {"cat": 1, "dog": 1, "eel": 1}})
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "training will use: train 3 images, val 0 images" in out
    assert "the val split of" in out and "every class has 1 image(s)" in out and "FAILED" in out
    with pytest.raises(DataError, match=r"val split .* would be empty.*at least 2 per class"):
        build_dataset(DataConfig(dataset="imagefolder", root=str(root)), "val")


def test_check_reports_the_split_sizes_of_a_one_folder_layout(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "ds", {"": {"a": 10, "b": 20}})
    assert main(["data", "check", str(root), "--val-fraction", "0.2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"] == {"train": 24, "val": 6} and report["ok"]
    cfg = DataConfig(dataset="imagefolder", root=str(root), val_fraction=0.2)
    assert (len(build_dataset(cfg, "train")), len(build_dataset(cfg, "val"))) == (24, 6)  # what training uses


def test_a_held_out_folder_without_train_is_not_taken_for_a_class(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "ds", {"val": {"a": 2, "b": 2}, "test": {"a": 1}})
    with pytest.raises(DataError, match=r"has val/ but no train/ folder: put the training images in .*train/CLASS"):
        build_dataset(DataConfig(dataset="imagefolder", root=str(root)), "train")
    assert main(["data", "check", str(root)]) == 1
    assert "has val/ but no train/ folder" in capsys.readouterr().out


def test_what_a_root_holds_decides_its_format(tmp_path):
    # CIFAR-100's extracted files (meta, train, test) against an image folder with a class called "meta".
    cifar = tmp_path / "c100"
    cifar.mkdir()
    for name in ("meta", "train", "test"):
        (cifar / name).write_bytes(b"x")
    folders = make_imagefolder(tmp_path / "imgs", {"train": {"meta": 1}, "test": {"meta": 1}})
    (folders / "meta").write_bytes(b"notes")
    assert detect_format(cifar) == "cifar100" and detect_format(folders) == "imagefolder"
    cfg, line = follow_root(DataConfig(dataset="cifar10", root=str(folders)))
    assert cfg.dataset == "imagefolder" and line == (f"data: {folders} holds image folders (train/ and test/): "
                                                     "data.dataset=imagefolder (the config named cifar10)")
    assert follow_root(cfg)[1] == f"data: {folders} holds image folders (train/ and test/): data.dataset=imagefolder"
    assert follow_root(DataConfig(dataset="digits")) == (DataConfig(dataset="digits"), None)


def test_a_root_that_holds_no_data_set_says_what_it_found(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"holds no data set \(it is empty\); the layouts read are a CIFAR"):
        detect_format(empty)
    (empty / "cifar-10-python.tar.gz").write_bytes(b"not really")
    (empty / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"it has 1 \.gz file, 1 \.txt file and no folders; did you mean "
                                        r".*empty/cifar-10-python\.tar\.gz\?"):
        detect_format(empty)
