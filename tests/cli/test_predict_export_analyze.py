"""`deit predict`, `deit export` and `deit analyze` end to end on tiny random checkpoints saved by the test."""

import json

import numpy as np
import pytest
from PIL import Image

from deit.checkpoints import save_checkpoint
from deit.cli import main
from deit.inference import export as export_mod
from deit.models import VisionTransformer, ViTConfig

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
