"""pretrained=True for DeiT III, whose official files carry no digest: the first copy is trusted only as a loadable
checkpoint of the named architecture, its sha256 is recorded beside it and checked on every later load; timm's
release tags pick the file (network mocked)."""

import dataclasses
import hashlib
import logging
import re

import pytest
import torch

from deit import create_model
from deit.checkpoints import CheckpointError, HashMismatchError
from deit.models.pos_embed import resample_pos_embed
from deit.models.registry import _MODELS

NAME = "deit3_small_patch16_224"


@pytest.fixture
def hub(hub, monkeypatch):
    """The local hub and 'server' of conftest, with DeiT III-S cut to one block (a release of the real size would be
    88 MB); the hub's checkpoints folder instead of the hub dir."""
    hub_dir, server, calls = hub
    entry = _MODELS[NAME]
    monkeypatch.setitem(_MODELS, NAME, dataclasses.replace(entry, config=dataclasses.replace(entry.config, depth=1)))
    return hub_dir / "checkpoints", server, calls


def _release(server, filename: str, **overrides) -> torch.nn.Module:
    """A release file as the official repository publishes it: {'model': ...} with models_v2's gamma names."""
    torch.manual_seed(0)
    source = create_model(NAME, **overrides).eval()
    sd = {re.sub(r"^(blocks\.\d+)\.ls([12])\.gamma$", r"\1.gamma_\2", k): v for k, v in source.state_dict().items()}
    torch.save({"model": sd}, server / filename)
    return source


def test_first_download_is_checked_recorded_and_later_loads_check_the_record(hub, caplog):
    cache, server, calls = hub
    source = _release(server, "deit_3_small_224_1k.pth")
    with caplog.at_level(logging.WARNING, logger="deit.checkpoints"):
        model = create_model(NAME, pretrained=True).eval()
    assert calls == ["https://dl.fbaipublicfiles.com/deit/deit_3_small_224_1k.pth"]
    record = cache / "deit_3_small_224_1k.pth.sha256"
    digest = hashlib.sha256((cache / "deit_3_small_224_1k.pth").read_bytes()).hexdigest()
    assert record.read_text() == f"{digest}  deit_3_small_224_1k.pth\n"
    assert "has no published digest" in caplog.text and "trusted" in caplog.text
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)

    again = create_model(NAME, pretrained=True, img_size=384)  # from the cache: checked against the record
    assert len(calls) == 1 and again.pos_embed.shape == (1, 576, 384)  # patch rows only, resampled
    torch.testing.assert_close(again.pos_embed.data, resample_pos_embed(source.pos_embed.data, (24, 24), 0))

    torch.manual_seed(5)  # the cached file replaced by another loadable one: refused, whatever it holds
    torch.save({"model": create_model(NAME).state_dict()}, cache / "deit_3_small_224_1k.pth")
    with pytest.raises(HashMismatchError, match=r"when first downloaded from .*deit_3_small_224_1k\.pth .*changed"):
        create_model(NAME, pretrained=True)
    assert len(calls) == 1


def test_a_download_of_another_architecture_is_refused_and_not_kept(hub):
    cache, server, _ = hub
    _release(server, "deit_3_small_224_1k.pth", depth=2)
    with pytest.raises(CheckpointError, match=f"depth 2.*not the architecture of {NAME}"):
        create_model(NAME, pretrained=True)
    assert not (cache / "deit_3_small_224_1k.pth").exists()
    assert not (cache / "deit_3_small_224_1k.pth.sha256").exists()


def test_timm_tags_pick_the_release(hub):
    cache, server, calls = hub
    source = _release(server, "deit_3_small_224_21k.pth")
    model = create_model(f"{NAME}.fb_in22k_ft_in1k", pretrained=True).eval()
    assert calls == ["https://dl.fbaipublicfiles.com/deit/deit_3_small_224_21k.pth"]
    assert model.preprocessing.crop_pct == 1.0 and (cache / "deit_3_small_224_21k.pth.sha256").exists()
    assert torch.equal(model.blocks[0].ls1.gamma, source.blocks[0].ls1.gamma)


def test_a_hashed_mmpretrain_release_is_checked_against_its_name(hub):
    cache, server, calls = hub
    name = "deit3-small-p16_3rdparty_in1k_20221008-0f7c70cf.pth"
    (server / name).write_bytes(b"not the release")
    with pytest.raises(HashMismatchError, match="0f7c70cf"):
        create_model(f"{NAME}.mmpretrain_in1k", pretrained=True)
    assert calls[0].endswith("/deit3/" + name) and not (cache / name).exists()
