"""`deit convert`: detection and changes are reported; every output layout reads back."""

import torch

from deit.checkpoints import load_checkpoint, read_checkpoint
from deit.cli import main


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
    from deit.checkpoints import save_checkpoint

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
