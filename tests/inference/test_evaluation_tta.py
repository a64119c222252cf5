"""Flip test-time augmentation: each head's logits averaged over the image and its left-right mirror image."""

import json

import pytest
import torch
from torch import nn

from deit.cli import main
from deit.inference.evaluation import evaluate, tta_head_outputs
from deit.models import build_architecture


class LeftOrRight(nn.Module):
    """Two classes: 0 when the left pixel is the brighter, 1 when the right one is. Mirror-averaged, both logits
    are the mean of the two pixels, so the prediction no longer depends on the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] + torch.tensor([[0.0, -1e-3]])


def left_right_batches():
    left = torch.tensor([[[[1.0, 0.0]]]]).repeat(3, 1, 1, 1)  # (3, 1, 1, 2): bright on the left
    right = left.flip(-1)
    yield torch.cat([left, right]), torch.tensor([0, 0, 0, 1, 1, 1])


def test_flip_averages_over_the_width_axis():
    model = LeftOrRight()
    assert evaluate(model, list(left_right_batches()))["top1"] == 1.0
    # Averaged with the mirror image, every image looks the same: class 0 (the tie broken by the bias) for all.
    assert evaluate(model, list(left_right_batches()), tta="flip")["top1"] == 0.5


def test_flip_averages_every_head_of_a_distilled_model():
    torch.manual_seed(0)
    model = build_architecture("deit_tiny_distilled_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1,
                         num_heads=2, num_classes=5).eval()
    x = torch.randn(4, 3, 16, 16)
    plain, mirrored, tta = (tta_head_outputs(model, x), tta_head_outputs(model, x.flip(-1)),
                            tta_head_outputs(model, x, "flip"))
    assert set(tta) == set(plain) and len(tta) == 3
    for head in plain:
        torch.testing.assert_close(tta[head], (plain[head] + mirrored[head]) / 2)
        assert not torch.allclose(tta[head], plain[head])
    with pytest.raises(ValueError, match="tta 'crop'"):
        tta_head_outputs(model, x, "crop")


@pytest.mark.slow
def test_deit_eval_tta_flip(tmp_path, capsys):
    from deit.checkpoints import save_checkpoint
    from deit.inference.evaluation import eval_loader

    torch.manual_seed(0)
    model = build_architecture("resnet_digits", num_classes=4, img_size=16)
    checkpoint = tmp_path / "m.safetensors"
    save_checkpoint(model, checkpoint)
    data = ["--data", "synthetic", "--set", "img_size=16", "synthetic_classes=4", "synthetic_val=40"]
    # amp pinned: the reference below runs in fp32, whatever `auto` would resolve to on this CPU
    assert main(["eval", "--checkpoint", str(checkpoint), *data, "--tta", "flip", "--json", "--workers", "0",
                 "--amp", "none"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    loader, _ = eval_loader("synthetic", model, overrides=data[3:])
    expected = evaluate(model, loader, tta="flip")
    assert metrics["num_samples"] == 40 and metrics["loss"] == pytest.approx(expected["loss"])
    assert metrics["loss"] != pytest.approx(evaluate(model, loader)["loss"])
    assert main(["eval", "--checkpoint", str(checkpoint), *data, "--tta", "flip", "--workers", "0"]) == 0
    assert "(val, 40 images, flip test-time augmentation)" in capsys.readouterr().out


@pytest.mark.parametrize("assume", ["0", "1"])
def test_deit_eval_amp_auto_resolves_like_training(tmp_path, capsys, monkeypatch, assume):
    from deit.checkpoints import save_checkpoint

    monkeypatch.setenv("DEIT_ASSUME_BF16", assume)
    torch.manual_seed(0)
    checkpoint = tmp_path / "m.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=4, img_size=16), checkpoint)
    data = ["--data", "synthetic", "--set", "img_size=16", "synthetic_classes=4", "synthetic_val=16"]
    runs = {}
    for amp in ("auto", "none" if assume == "0" else "bf16"):
        assert main(["eval", "--checkpoint", str(checkpoint), *data, "--amp", amp, "--json", "--workers", "0"]) == 0
        runs[amp] = json.loads(capsys.readouterr().out)
    assert runs["auto"] == runs["none" if assume == "0" else "bf16"]  # auto is what the variable says
