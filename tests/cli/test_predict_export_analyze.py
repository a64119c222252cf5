"""`deit predict`, `deit export` and `deit analyze` end to end on tiny random checkpoints saved by the test."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deit.checkpoints import load_model, save_checkpoint
from deit.cli import main
from deit.inference import export as export_mod
from deit.inference.predictor import Predictor
from deit.models import VisionTransformer, ViTConfig
from deit.models.contract import head_outputs

# 10 classes like the digits data; 32 px, 4x4 patches of 8 px.
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
DIGITS = [str(i) for i in range(10)]


def save_tiny(path, distilled=True, **kw):
    model = VisionTransformer(ViTConfig(**{**TINY, "distilled": distilled, **kw})).eval()
    model.class_names = DIGITS
    save_checkpoint(model, path)
    return model


@pytest.fixture
def student(tmp_path):
    path = tmp_path / "student.safetensors"
    save_tiny(path)
    return path


def write_image(path, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def test_predict_reports_bad_files_and_predicts_the_others(student, tmp_path, capsys):
    good = write_image(tmp_path / "a.png")
    gray = write_image(tmp_path / "b.png", seed=1, mode="L")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    missing = tmp_path / "nope.png"
    code = main(["predict", str(good), str(bad), str(missing), str(gray), "--checkpoint", str(student),
                 "--top-k", "3", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"{bad}: ERROR: cannot read image" in out and f"{missing}: ERROR: no such file" in out
    assert f"{good}:" in out and f"{gray}:" in out
    assert "2 of 4 input(s) could not be read" in err

    code = main(["predict", str(good), str(gray), "--checkpoint", str(student), "--json", "--head", "dist",
                 "--device", "cpu"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["source"] for r in rows] == [str(good), str(gray)]
    assert len(rows[0]["predictions"]) == 5
    assert all(p["name"] == DIGITS[p["index"]] for r in rows for p in r["predictions"])  # stored class names


def test_predict_dist_head_on_a_plain_model_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "plain.safetensors"
    save_tiny(path, distilled=False)
    code = main(["predict", str(write_image(tmp_path / "a.png")), "--checkpoint", str(path), "--head", "dist"])
    assert code == 2
    assert "needs a distilled model" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_checks_parity(student, tmp_path, capsys, fmt):
    out = tmp_path / f"student.{fmt}"
    code = main(["export", str(student), "--format", fmt, "-o", str(out), "--dynamic-batch", "--head", "cls",
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and out.exists()
    assert result["passed"] and result["head"] == "cls" and set(result["max_abs_diff"]) == {"2", "5"}
    assert result["worst_diff"] <= 1e-4


def test_export_fails_when_the_export_differs(student, tmp_path, capsys, monkeypatch):
    real = export_mod.run_exported
    monkeypatch.setattr(export_mod, "run_exported", lambda path, fmt, x: real(path, fmt, x) + 0.01)
    code = main(["export", str(student), "--format", "onnx", "-o", str(tmp_path / "bad.onnx")])
    err = capsys.readouterr().err
    assert code == 1
    assert "deit export: error:" in err and "above the tolerance 0.0001" in err and "bad.onnx" in err


def test_analyze_tokens_attention_agreement(student, tmp_path, capsys):
    out = tmp_path / "analysis"
    code = main(["analyze", "tokens", str(student), "--data", "digits", "--max-images", "40", "--batch-size", "16",
                 "--output", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert "block 2" in capsys.readouterr().out
    tokens = json.loads((out / "tokens.json").read_text())
    assert tokens["num_images"] == 40 and len(tokens["cls_dist_cosine"]) == 3
    assert len(tokens["head_weight_cosine"]) == 10
    assert Image.open(out / "tokens.png").format == "PNG"

    png = tmp_path / "att.png"
    code = main(["analyze", "attention", str(student), str(write_image(tmp_path / "a.png")), "--output", str(png),
                 "--device", "cpu"])
    assert code == 0
    assert "dist head:" in capsys.readouterr().out
    assert Image.open(png).format == "PNG"

    teacher = tmp_path / "teacher.safetensors"
    save_tiny(teacher, distilled=False, depth=1)
    code = main(["analyze", "agreement", str(student), "--teacher", str(teacher), "--data", "digits",
                 "--max-images", "50", "--output", str(out), "--json", "--device", "cpu"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["num_images"] == 50
    assert set(result["accuracy"]) == set(result["teacher_agreement"]) == {"cls", "dist", "avg"}
    assert json.loads((out / "agreement.json").read_text())["teacher"] == str(teacher)


def test_analyze_tokens_needs_a_distilled_checkpoint(tmp_path, capsys):
    path = tmp_path / "plain.safetensors"
    save_tiny(path, distilled=False)
    code = main(["analyze", "tokens", str(path), "--data", "digits", "--max-images", "4", "--output",
                 str(tmp_path / "o")])
    assert code == 2
    assert "distilled" in capsys.readouterr().err


def test_predict_a_folder_recursively_to_csv_with_every_head(student, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "b" / "deeper").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    files = [write_image(photos / "a.png"), write_image(photos / "b" / "c.jpg", seed=1),
             write_image(photos / "b" / "deeper" / "d.png", seed=2)]
    write_image(photos / ".hidden" / "skip.png")
    (photos / "notes.txt").write_text("not an image")
    (photos / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "preds.csv"
    code = main(["predict", str(photos), "--checkpoint", str(student), "--top-k", "2", "--output", str(out)])
    assert code == 1  # the broken file; the others are written
    assert f"wrote 4 prediction(s) to {out}" in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(files[0]), str(photos / "b" / "broken.jpg"), str(files[1]),
                                         str(files[2])]
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2",
                             *(f"{h}_{c}_{k}" for h in ("cls", "dist", "avg") for k in (1, 2)
                               for c in ("label", "prob")), "error"]
    broken = rows[1]
    assert broken["error"].startswith("cannot read image") and broken["label_1"] == ""
    model = load_model(student)
    with torch.inference_mode():
        heads = head_outputs(model, Predictor(model).preprocess(files[0])[None])
    for head, logits in heads.items():
        probs = logits.softmax(-1)[0]
        assert rows[0][f"{head}_label_1"] == DIGITS[int(probs.argmax())]
        assert float(rows[0][f"{head}_prob_1"]) == pytest.approx(float(probs.max()), abs=1e-5)
    assert rows[0]["label_1"] == rows[0]["avg_label_1"]  # the model's own prediction: the heads' average


def test_predict_jsonl_of_a_one_head_model_and_an_unknown_suffix(tmp_path, capsys):
    plain = tmp_path / "plain.safetensors"
    save_tiny(plain, distilled=False)
    image = write_image(tmp_path / "a.png")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(image), "--checkpoint", str(plain), "--top-k", "3", "--output", str(out)]) == 0
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["path"] == str(image) and "heads" not in row and len(row["predictions"]) == 3
    assert set(row["predictions"][0]) == {"label", "index", "probability"}
    capsys.readouterr()
    assert main(["predict", str(image), "--checkpoint", str(plain), "--output", str(tmp_path / "p.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"deit predict: error: --output {tmp_path / 'p.txt'}: cannot tell the format from '.txt'; "
                   "name the file *.csv or *.jsonl")
    assert not (tmp_path / "p.txt").exists()
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--checkpoint", str(plain)]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_attention_maps_of_different_images_never_share_a_file(student, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default output folder is relative
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
    same_name = [write_image(tmp_path / folder / "cat.png", seed=i) for i, folder in enumerate(("x", "y"))]
    other = tmp_path / "other.safetensors"
    save_tiny(other)
    written = []
    for image, checkpoint in ((same_name[0], student), (same_name[1], student), (same_name[0], other),
                              (same_name[0], student)):
        assert main(["analyze", "attention", str(checkpoint), str(image), "--json"]) == 0
        written.append(json.loads(capsys.readouterr().out)["output"])
    assert len(set(written[:3])) == 3  # same file name, other folder; same image, other checkpoint
    assert written[3] == written[0]  # the same image and checkpoint again: the same file (stable names)
    assert all(Path(w).parent == Path("runs/analysis") and Path(w).name.startswith("attention_cat_") for w in written)
    assert sorted(p.name for p in Path("runs/analysis").iterdir()) == sorted({Path(w).name for w in written})


def test_dir_of_the_package_shows_the_public_api_and_import_stays_light():
    code = ("import sys, deit; names = dir(deit); "
            "assert {'create_model', 'load_checkpoint', 'save_checkpoint', 'list_models'} <= set(names), names; "
            "assert 'deit.checkpoints' not in sys.modules; assert callable(deit.create_model)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
