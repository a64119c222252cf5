"""`deit convert`: detection and changes are reported; every output layout reads back."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from deit.checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from deit.cli import main
from deit.models import Preprocessing

SRC = Path(__file__).resolve().parents[2] / "src"


def test_convert_official_to_ours_with_new_classes_and_size(tmp_path, make_vit, capsys):
    model = make_vit()
    torch.save({"model": model.state_dict()}, tmp_path / "off.pth")
    dst = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "off.pth"), str(dst), "--num-classes", "3", "--img-size", "48"]) == 0
    out = capsys.readouterr().out
    assert "layout official" in out and "distilled ViT embed_dim 128, depth 2" in out
    assert "re-initialised head and head_dist" in out and "resampled pos_embed (1, 18, 128) -> (1, 38, 128)" in out
    info = read_checkpoint(dst)
    assert info.layout == "deit" and info.config.num_classes == 3 and info.config.img_size == 48


def test_convert_to_official_and_hf_and_back(tmp_path, make_vit, images, capsys):
    model = make_vit()
    save_checkpoint(model, tmp_path / "m.safetensors")
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "o.pth"), "--to", "official"]) == 0
    assert "changed: nothing" in capsys.readouterr().out
    sd = torch.load(tmp_path / "o.pth", weights_only=True)["model"]
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    for layout in ("v5", "legacy"):
        hf_dir = tmp_path / f"hf_{layout}"
        assert main(["convert", str(tmp_path / "o.pth"), str(hf_dir), "--to", "hf", "--hf-layout", layout]) == 0
        assert read_checkpoint(hf_dir).layout == f"hf-{layout}"
        with torch.no_grad():
            torch.testing.assert_close(load_checkpoint(hf_dir)(images), model(images), rtol=0, atol=1e-6)


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "x.safetensors")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "a.pth").write_bytes(b"\x80\x02}q\x00.")  # an empty dict pickle
    assert main(["convert", str(tmp_path / "a.pth"), str(tmp_path / "x.pth")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def _deit(args, cwd):
    """`python -m deit ARGS` as a user types it: its stdout (the command must succeed)."""
    done = subprocess.run([sys.executable, "-m", "deit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_round_trip_through_a_weights_only_layout_says_what_it_drops_and_the_flags_put_it_back(
        tmp_path, make_vit, images):
    """ours -> timm -> ours: the timm file cannot hold the head count, head mode, preprocessing or class names;
    convert says so (with the command that restores them), and that command gives back the same model."""
    # 2 heads of 32 dimensions: not DeiT's 64 a head, so a reader of the weights alone would build 1 head.
    model = make_vit(embed_dim=64, num_heads=2, head_mode="cls")
    model.preprocessing = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.2, 0.3),
                                        interpolation="bilinear", crop_pct=1.0)
    model.class_names = [f"c{i}" for i in range(5)]
    save_checkpoint(model, tmp_path / "ours.safetensors")
    for timm in ("timm.safetensors", "timm.pth"):
        out = _deit(["convert", "ours.safetensors", timm, "--to", "timm"], tmp_path)
        assert "dropped (the timm layout records weights only" in out
        for dropped in ("num_heads 2 (read back as 1)", "head_mode cls (read back as avg)",
                        "preprocessing mean 0.5,0.5,0.5 (read back as 0.485,0.456,0.406)",
                        "preprocessing crop_pct 1 (read back as 0.875)",
                        "preprocessing interpolation bilinear (read back as bicubic)", "class names (5)"):
            assert dropped in out, out
        restore = next(line for line in out.splitlines() if "to read it back as this model:" in line)
        command = restore.split("this model: deit ")[1].replace("OUT.safetensors", "back.safetensors")
        assert read_checkpoint(tmp_path / timm).layout == "timm"
        _deit(command.split(), tmp_path)
        back = load_checkpoint(tmp_path / "back.safetensors")
        assert back.preprocessing == model.preprocessing and back.config == model.config
        with torch.no_grad():
            torch.testing.assert_close(back(images), model(images), rtol=0, atol=0)
        assert back.class_names is None  # what no flag restores: said above


def test_convert_to_official_says_when_nothing_is_dropped(tmp_path, make_vit, capsys):
    save_checkpoint(make_vit(), tmp_path / "m.safetensors")  # DeiT's conventions: the weights say everything
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "o.pth"), "--to", "official"]) == 0
    assert "dropped: nothing" in capsys.readouterr().out
