"""Fuzzing the checkpoint reader: valid files of every kind deit reads, with bytes flipped, inserted, deleted or the
file cut short, loaded as `deit eval --checkpoint` loads them. Each either loads or fails with one of our errors
(what the CLI prints as one line with exit code 2): never another exception, never a hang.

Deterministic (derandomized, fixed example counts) so CI is stable; a few seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fuzz_support import no_hang
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deit.checkpoints import load_checkpoint, save_checkpoint, save_official, save_timm
from deit.cli.errors import USER_ERRORS
from deit.models import VisionTransformer, ViTConfig, build_architecture

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])



def _tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(ViTConfig(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=1,
                                       num_classes=3, distilled=True)).eval()


def _writers():
    def ours(d: Path) -> Path:
        model = _tiny_vit()
        model.class_names = ["a", "b", "c"]
        return save_checkpoint(model, d / "ours.safetensors")

    def resnet9(d: Path) -> Path:
        torch.manual_seed(0)
        return save_checkpoint(build_architecture("resnet9", num_classes=3, widths=(4, 4, 8, 8)), d / "r9.safetensors")

    return {
        "ours": ours,
        "ours-convnet": resnet9,
        "timm-safetensors": lambda d: save_timm(_tiny_vit(), d / "timm.safetensors"),
        "timm-pth": lambda d: save_timm(_tiny_vit(), d / "timm.pth"),
        "official-pth": lambda d: save_official(_tiny_vit(), d / "official.pth"),
    }


WRITERS = _writers()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("valid")
    out = {}
    for kind, write in WRITERS.items():
        path = write(d)
        load_checkpoint(path)  # valid to begin with
        out[kind] = path.read_bytes()
    return out


@st.composite
def mutations(draw, size: int):
    """Up to four edits of a file of ``size`` bytes; positions favour the first 512 bytes, where the headers,
    the zip's first entries and our metadata are."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.one_of(st.integers(0, min(size, 512)), st.integers(0, size)))
        edits.append((kind, pos, draw(st.binary(min_size=1, max_size=8))))
    return edits


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, payload in edits:
        pos = min(pos, len(buf))
        if kind == "flip" and buf:
            pos = min(pos, len(buf) - 1)
            buf[pos] ^= payload[0] or 0xFF
        elif kind == "insert":
            buf[pos:pos] = payload
        elif kind == "delete":
            del buf[pos:pos + len(payload)]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


def _load_or_our_error(path: Path) -> None:
    try:
        with no_hang():
            load_checkpoint(path)
    except USER_ERRORS as exc:  # what the CLI reports as one line, exit code 2
        assert str(exc).strip() and "\n" not in " ".join(str(exc).split()), exc
    # Anything else (TypeError, RuntimeError, a Hang) propagates: the test fails and hypothesis shows the edits.


@pytest.mark.parametrize("kind", list(WRITERS))
def test_mutated_checkpoints_load_or_fail_with_our_error(kind, valid, tmp_path_factory):
    data = valid[kind]
    path = tmp_path_factory.mktemp("mutated") / f"mutated{Path(kind).suffix}"

    @FUZZ
    @given(edits=mutations(len(data)))
    def check(edits):
        path.write_bytes(mutate(data, edits))
        _load_or_our_error(path)

    check()


def test_prefixes_of_a_checkpoint_fail_with_our_error(valid, tmp_path):
    """Every length a download or copy can stop at, over the first KiB and then spaced through the file."""
    data = valid["ours"]
    path = tmp_path / "cut.safetensors"
    for n in sorted({*range(0, 1024, 7), *range(1024, len(data), max(1, len(data) // 64))}):
        path.write_bytes(data[:n])
        with pytest.raises(USER_ERRORS), no_hang():
            load_checkpoint(path)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# What a corrupt width, depth, size or rate looks like: small and negative numbers, zero, huge ones, NaN.
NUMBERS = st.integers(-3, 3000) | st.sampled_from([0, 10**9, 2**63, -(2**31)]) | st.floats()


@pytest.mark.parametrize("kind", ["ours", "ours-convnet"])
def test_our_metadata_with_any_value_loads_or_fails_with_our_error(kind, valid, tmp_path_factory):
    """Our header's JSON with one value replaced by any JSON (a string for a width, a list for a config, a huge
    depth), or one entry by any text: the values are checked, never trusted into a TypeError or a model of any
    size."""
    from safetensors.torch import load, save_file

    d = tmp_path_factory.mktemp("meta")
    src = d / "valid.safetensors"
    src.write_bytes(valid[kind])
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        metadata = dict(f.metadata())
    tensors = load(valid[kind])
    entries = sorted(metadata)
    path = d / "mutated.safetensors"

    @settings(FUZZ, max_examples=120)
    @given(entry=st.sampled_from(entries), field=st.text(max_size=12), value=NUMBERS | JSON_VALUES,
           raw=st.none() | st.text(max_size=40), pick=st.integers(0, 1000))
    def check(entry, field, value, raw, pick):
        text = metadata[entry]
        if raw is not None:
            text = raw
        else:
            try:
                tree = json.loads(text)
            except json.JSONDecodeError:
                tree = text
            if isinstance(tree, dict) and tree:
                keys = sorted(tree)
                tree[keys[pick % len(keys)] if pick % 5 else field] = value
            else:
                tree = value
            text = json.dumps(tree)
        save_file(tensors, str(path), metadata={**metadata, entry: text})
        _load_or_our_error(path)

    check()
