import json

import numpy as np
import onnx
import pytest
import torch
from inferencehelpers import tiny

from deit.inference import ExportParityError, export_model
from deit.inference import export as export_mod

# Reloading a TorchScript file the way users do; torch 2.13 deprecates torch.jit but still ships it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity_with_dynamic_batch(model, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    result = export_model(model, out, fmt, dynamic_batch=True, head="avg")
    assert result.passed
    assert sorted(result.max_abs_diff) == [2, 5]
    assert result.worst_diff <= 1e-4
    # Reload independently of the exporter and compare with PyTorch on a fresh batch of another size.
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        onnx.checker.check_model(onnx.load(str(out)))
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == ["logits"]  # one output
        got = session.run(None, {"input": x.numpy()})[0]
    else:
        got = torch.jit.load(str(out))(x).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    meta = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert meta["input_shape"] == ["batch", 3, 32, 32]
    assert meta["preprocessing"]["input_size"] == 32
    assert meta["class_names"] == [f"class_{i}" for i in range(5)]
    assert meta["passed"] is True


def test_onnx_static_batch_and_chosen_head(model, tmp_path):
    out = tmp_path / "dist.onnx"
    result = export_model(model, out, "onnx", head="dist", batch_size=2)
    assert list(result.max_abs_diff) == [2]
    import onnxruntime as ort

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, dist_logits = model.forward_heads(x)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 32, 32]
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], dist_logits.numpy(), atol=1e-4)


def test_export_at_another_image_size_resamples_pos_embed(tmp_path):
    model = tiny(distilled=False)
    result = export_model(model, tmp_path / "m48.pt", "torchscript", img_size=48)
    assert result.passed and result.img_size == 48
    assert model.config.img_size == 32  # the caller's model is untouched
    traced = torch.jit.load(str(tmp_path / "m48.pt"))
    assert traced(torch.randn(1, 3, 48, 48)).shape == (1, 5)


def test_parity_failure_is_an_error_naming_the_file(model, tmp_path, monkeypatch):
    real = export_mod.run_exported
    monkeypatch.setattr(export_mod, "run_exported", lambda path, fmt, x: real(path, fmt, x) + 1e-3)
    with pytest.raises(ExportParityError, match=r"model\.onnx.*1\.000e-03.*tolerance 0\.0001"):
        export_model(model, tmp_path / "model.onnx", "onnx")
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["passed"] is False


def test_bad_arguments_are_clear(model, tmp_path):
    with pytest.raises(ValueError, match="opset 13.*14"):
        export_model(model, tmp_path / "m.onnx", "onnx", opset=13)
    with pytest.raises(ValueError, match="format"):
        export_model(model, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="distilled"):
        export_model(tiny(distilled=False), tmp_path / "m.onnx", "onnx", head="dist")
