import shutil
import urllib.error

import pytest
import torch

from deit.checkpoints import pretrained
from deit.models import VisionTransformer, ViTConfig

# Small enough to be instant, big enough to have every key kind: 2 blocks, 4x4 patch grid, 2 prefix tokens.
# embed_dim 128 with 2 heads follows the head-dim-64 convention, so foreign layouts infer the head count right.
TINY = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=5)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    # Non-trivial values everywhere (biases, norms, tokens), so a swapped or dropped tensor changes the output.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + offset)
    return model


@pytest.fixture
def make_vit():
    def make(distilled: bool = True, **kw) -> VisionTransformer:
        return _randomise(VisionTransformer(ViTConfig(**{**TINY, "distilled": distilled, **kw}))).eval()

    return make


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub dir, and a fetch that copies from a local 'server' folder and counts its calls:
    (hub_dir, server, calls)."""
    hub_dir = tmp_path / "hub"
    server = tmp_path / "server"
    server.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    calls = []

    def fake_fetch(url, dst):
        calls.append(url)
        src = server / url.rsplit("/", 1)[1]
        if not src.exists():
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        shutil.copyfile(src, dst)

    monkeypatch.setattr(pretrained, "_fetch", fake_fetch)
    return hub_dir, server, calls
