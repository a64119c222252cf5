"""pretrained=True / a path: the hub cache, sha256 prefixes, and what happens without a network (mocked)."""

import dataclasses
import hashlib
import shutil

import pytest
import torch

from deit import create_model
from deit.checkpoints import DownloadError, HashMismatchError, StateDictMismatchError
from deit.models.registry import _MODELS

NAME = "deit_tiny_patch16_224"


@pytest.fixture
def release(tmp_path, monkeypatch, hub):
    """A 'release' of deit_tiny: a file on the fake server whose name carries its true sha256 prefix."""
    _, server, _ = hub
    source = create_model(NAME)
    tmp = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"{NAME}-{digest[:8]}.pth"
    shutil.copyfile(tmp, server / name)
    entry = _MODELS[NAME]
    monkeypatch.setitem(_MODELS, NAME, dataclasses.replace(entry, pretrained_url=f"https://example.invalid/deit/{name}"))
    return source, name


def test_pretrained_true_downloads_once_verifies_and_loads(hub, release):
    hub_dir, _, calls = hub
    source, name = release
    x = torch.randn(1, 3, 224, 224)
    model = create_model(NAME, pretrained=True).eval()
    assert (hub_dir / "checkpoints" / name).exists() and len(calls) == 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), source.eval()(x), rtol=0, atol=0)
    again = create_model(NAME, pretrained=True, num_classes=7)  # cached: verified, not fetched again
    assert len(calls) == 1 and again.num_classes == 7 and again.head.weight.shape == (7, 192)


def test_cached_file_with_wrong_hash_is_rejected(hub, release):
    hub_dir, _, calls = hub
    _, name = release
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / name).write_bytes(b"truncated download")
    with pytest.raises(HashMismatchError, match=name.split("-")[-1].split(".")[0]) as err:
        create_model(NAME, pretrained=True)
    assert str(hub_dir / "checkpoints" / name) in str(err.value) and not calls


def test_downloaded_file_with_wrong_hash_is_deleted(hub, monkeypatch):
    hub_dir, server, _ = hub
    (server / f"{NAME}-00000000.pth").write_bytes(b"not the release")
    entry = _MODELS[NAME]
    monkeypatch.setitem(_MODELS, NAME, dataclasses.replace(entry, pretrained_url=f"https://x/{NAME}-00000000.pth"))
    with pytest.raises(HashMismatchError, match="00000000"):
        create_model(NAME, pretrained=True)
    assert not (hub_dir / "checkpoints" / f"{NAME}-00000000.pth").exists()


def test_no_network_tells_the_user_to_pass_a_local_file(hub):
    _, _, calls = hub
    with pytest.raises(DownloadError) as err:
        create_model(NAME, pretrained=True)  # the real official URL; the fake server does not have it
    msg = str(err.value)
    assert "https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth" in msg
    assert "pretrained='/path/to/deit_tiny_patch16_224-a1311bcf.pth'" in msg and "load_checkpoint" in msg
    assert len(calls) == 1


def test_pretrained_local_file_in_any_layout(tmp_path, hub):
    _, _, calls = hub
    source = create_model(NAME, num_classes=10)
    source.class_names = [f"c{i}" for i in range(10)]
    from deit.checkpoints import save_checkpoint

    save_checkpoint(source, tmp_path / "ft.safetensors")
    model = create_model(NAME, pretrained=str(tmp_path / "ft.safetensors")).eval()
    assert model.num_classes == 10 and model.class_names == source.class_names
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source.eval()(x), rtol=0, atol=0)
    bigger = create_model(NAME, pretrained=str(tmp_path / "ft.safetensors"), img_size=256, num_classes=3)
    assert bigger.pos_embed.shape == (1, 1 + 256, 192) and bigger.num_classes == 3
    assert not calls


def test_pretrained_file_of_another_architecture_names_the_key_and_shapes(tmp_path):
    torch.save(create_model("deit_tiny_distilled_patch16_224").state_dict(), tmp_path / "ti_d.pth")
    with pytest.raises(StateDictMismatchError, match=r"dist_token") as err:
        create_model(NAME, pretrained=str(tmp_path / "ti_d.pth"))
    assert "distilled" in str(err.value)
    shapes = r"'patch_embed\.proj\.weight'.*\(192, 3, 16, 16\).*\(384, 3, 16, 16\)"
    with pytest.raises(StateDictMismatchError, match=shapes):
        create_model("deit_small_patch16_224", depth=1, pretrained=str(tmp_path / "ti_d.pth"))


def test_single_process_group_downloads_on_rank0_behind_a_barrier(tmp_path, hub, release):
    import torch.distributed as dist

    _, _, calls = hub
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        create_model(NAME, pretrained=True)
    finally:
        dist.destroy_process_group()
    assert len(calls) == 1
