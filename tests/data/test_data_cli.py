import json

from datahelpers import make_cifar, make_imagefolder, write_image

from deit.cli import main


def test_check_a_clean_imagefolder_exits_zero(folder, capsys):
    assert main(["data", "check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "imagefolder" in out and "classes:  3" in out and "train:    9 images" in out and "OK" in out
    assert "train class(es) with no val folder: ['dog']" in out  # a warning, not a failure


def test_check_reports_every_problem_and_exits_one(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "ds", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "eel": 1}})
    (root / "train" / "cat" / "bad.jpg").write_text("x")
    (root / "train" / "emu").mkdir()
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "empty class folder" in out and "emu" in out
    assert "val class(es) missing from train: ['eel']" in out
    assert "bad.jpg" in out and "FAILED: 3 problem(s)" in out
    assert main(["data", "check", str(root), "--json", "--no-decode"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["unreadable"] == [] and report["counts"]["train"]["cat"] == 4


def test_check_csv_and_cifar_formats(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text("a.png,x\nmissing.png,y\n")
    (tmp_path / "val.csv").write_text("a.png,x\n")
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "missing.png" in capsys.readouterr().out
    tar = make_cifar(tmp_path / "c", "cifar100", n_per_batch=3)
    assert main(["data", "check", str(tar)]) == 0
    out = capsys.readouterr().out
    assert "cifar100" in out and "classes:  100" in out and "val:      3 images" in out


def test_check_bad_path_is_a_usage_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
