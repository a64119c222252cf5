"""The teacher-output cache: a run from the cache ends with the live teacher's weights, bit for bit; filled on the
fly; refused for another stream; bad caches are clear errors; a partly built cache resumes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_support import REPO, SUBPROCESS_ENV, tiny_overrides

from deit.cli import main
from deit.runtime.precision import ASSUME_BF16_ENV
from deit.train import load_config, train
from deit.train.cache_build import BuildOptions, build_cache
from deit.train.teacher_cache import CacheMeta, decode, encode


def _cfg(out: Path, teacher: Path, *extra: str, kind: str = "hard"):
    return load_config("digits-convnet-teacher", tiny_overrides(out, extra=(
        f"distillation.type={kind}", "distillation.tau=2.0", f"teacher.checkpoint={teacher}", *extra)))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def live(tmp_path_factory, teacher) -> dict[str, dict]:
    """Reference runs with the live teacher, hard and soft."""
    root = tmp_path_factory.mktemp("live")
    return {kind: _weights(train(_cfg(root / kind, teacher, kind=kind)).run_dir) for kind in ("hard", "soft")}


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_a_run_from_a_built_cache_equals_the_live_teacher_run(tmp_path, teacher, live, kind, capsys):
    cache = tmp_path / "cache"
    meta = build_cache(_cfg(tmp_path / "unused", teacher, kind=kind), cache, BuildOptions(progress=False))
    assert meta.outputs == ("argmax" if kind == "hard" else "logits") and meta.storage == "float32"
    # the teacher is not needed (nor loaded) to train from a complete cache
    cfg = _cfg(tmp_path / "run", teacher, f"distillation.teacher_cache={cache}", "teacher.checkpoint=null", kind=kind)
    result = train(cfg)
    assert "read from the cache" in capsys.readouterr().out and "teacher_top1" not in result.summary["final"]
    assert _same(_weights(result.run_dir), live[kind])


@pytest.mark.parametrize("assume, storage", [("1", "bfloat16"), ("0", "float32")])
def test_soft_logits_are_stored_in_the_dtype_auto_gives_the_teacher(tmp_path, teacher, monkeypatch, capsys, assume,
                                                                     storage):
    # Both resolutions of teacher.dtype=auto on any machine: bf16 logits are stored exactly as bf16.
    monkeypatch.setenv(ASSUME_BF16_ENV, assume)
    cfg = _cfg(tmp_path / "u", teacher, "teacher.dtype=auto", "epochs=1", kind="soft")
    meta = build_cache(cfg, tmp_path / "cache", BuildOptions(progress=False))
    assert meta.outputs == "logits" and meta.storage == storage
    assert f"teacher in {storage} (teacher.dtype=auto: {ASSUME_BF16_ENV}={assume}" in capsys.readouterr().out


def test_the_first_run_fills_the_cache_and_later_runs_read_it(tmp_path, teacher, live, capsys):
    cache = tmp_path / "cache"
    first = train(_cfg(tmp_path / "first", teacher, f"distillation.teacher_cache={cache}"))
    assert "computed by the teacher and written to the cache" in capsys.readouterr().out
    assert _same(_weights(first.run_dir), live["hard"])
    assert json.loads((cache / "cache.json").read_text())["filled_by"] == "run"
    later = train(_cfg(tmp_path / "later", teacher, f"distillation.teacher_cache={cache}"))
    assert "the teacher is not loaded" in capsys.readouterr().out and _same(_weights(later.run_dir), live["hard"])
    # another student on the same stream: its own model and lr, still the same cache
    other = _cfg(tmp_path / "other", teacher, f"distillation.teacher_cache={cache}", "optim.lr=1e-3",
                 "model.args={patch_size: 4, embed_dim: 48, depth: 1, num_heads: 3}", "epochs=1")
    train(other)
    assert "the teacher is not loaded" in capsys.readouterr().out


def test_another_stream_and_bad_caches_are_refused_with_the_fix(tmp_path, teacher):
    cache = tmp_path / "cache"
    build_cache(_cfg(tmp_path / "u", teacher), cache, BuildOptions(progress=False))
    uses = f"distillation.teacher_cache={cache}"
    with pytest.raises(ValueError, match=r"another data stream \(data.mixup: 0.8 -> 0.5; seed: 3 -> 4\)"):
        train(_cfg(tmp_path / "a", teacher, uses, "seed=4", "data.mixup=0.5"))
    with pytest.raises(ValueError, match="holds the teacher's argmax only.*--outputs logits"):
        train(_cfg(tmp_path / "b", teacher, uses, kind="soft"))
    with pytest.raises(ValueError, match=r"has 2 of the 3 epochs.*missing: 3\).*epochs=3"):
        train(_cfg(tmp_path / "c", teacher, uses, "epochs=3", "teacher.checkpoint=null"))
    part = cache / "e0001-r000.bin"
    part.write_bytes(part.read_bytes()[:-3])
    with pytest.raises(ValueError, match="e0001-r000.bin is truncated.*delete it"):
        train(_cfg(tmp_path / "d", teacher, uses, "teacher.checkpoint=null"))
    with pytest.raises(ValueError, match="does not exist and no teacher is configured"):
        train(_cfg(tmp_path / "e", teacher, f"distillation.teacher_cache={tmp_path / 'none'}",
                   "teacher.checkpoint=null"))


def test_a_soft_cache_serves_hard_distillation(tmp_path, teacher, live):
    cache = tmp_path / "cache"
    build_cache(_cfg(tmp_path / "u", teacher, kind="soft"), cache, BuildOptions(progress=False))
    result = train(_cfg(tmp_path / "run", teacher, f"distillation.teacher_cache={cache}", "teacher.checkpoint=null"))
    assert _same(_weights(result.run_dir), live["hard"])  # argmax of the stored logits = the live argmax


def test_a_stopped_build_resumes_at_the_missing_parts(tmp_path, teacher, capsys):
    cache = tmp_path / "cache"
    cfg = _cfg(tmp_path / "u", teacher, "epochs=3")
    build_cache(cfg, cache, BuildOptions(progress=False))
    kept = cache / "e0000-r000.bin"
    before = kept.stat().st_mtime_ns
    (cache / "e0002-r000.bin").unlink()  # as if stopped before the last part
    reference = (cache / "e0001-r000.bin").read_bytes()
    overrides = tiny_overrides(tmp_path / "u", extra=("epochs=3", "distillation.type=hard", "distillation.tau=2.0",
                                                      f"teacher.checkpoint={teacher}"))
    assert main(["teacher-cache", "build", "--config", "digits-convnet-teacher", "--output", str(cache),
                 "--no-progress", *overrides]) == 0
    assert "1 of 3 parts to compute" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == before and (cache / "e0002-r000.bin").is_file()
    assert (cache / "e0001-r000.bin").read_bytes() == reference
    assert main(["teacher-cache", "info", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["epochs_complete"] == 3 and info["bytes_per_image_view"] == 2 and info["outputs"] == "argmax"


def test_topk_keeps_the_top_logits_and_spreads_the_rest():
    logits = torch.tensor([[4.0, 1.0, 0.5, -1.0, 2.0], [0.0, 0.0, 3.0, 1.0, 1.0]])
    meta = CacheMeta(key={}, outputs="topk", storage="float32", num_classes=5, epochs=1, ranks=1, batch_size=2,
                     batches=1, teacher_batch_size=2, filled_by="build", top_k=2)
    rebuilt = decode(meta, encode(meta, logits), torch.device("cpu"))
    assert torch.equal(rebuilt.topk(2).indices.sort().values, logits.topk(2).indices.sort().values)
    assert torch.equal(rebuilt.gather(1, logits.topk(2).indices), logits.topk(2).values)
    torch.testing.assert_close(rebuilt.logsumexp(1), logits.logsumexp(1))  # the total mass is kept
    rest = rebuilt.scatter(1, logits.topk(2).indices, float("nan"))
    assert torch.allclose(rest[~rest.isnan()].view(2, 3), rest[~rest.isnan()].view(2, 3)[:, :1])  # spread evenly
    assert math.isclose(meta.bytes_per_sample, 2 * 4 + 2 * 2 + 4)


@pytest.mark.slow
def test_two_builders_under_torchrun_split_the_epochs(tmp_path, teacher):
    one, two = tmp_path / "one", tmp_path / "two"
    cfg = _cfg(tmp_path / "u", teacher, "epochs=4")
    build_cache(cfg, one, BuildOptions(progress=False))
    overrides = tiny_overrides(tmp_path / "u", extra=("epochs=4", "distillation.type=hard", "distillation.tau=2.0",
                                                      f"teacher.checkpoint={teacher}"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "deit",
           "teacher-cache", "build", "--config", "digits-convnet-teacher", "--output", str(two), "--no-progress",
           *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for part in sorted(os.listdir(one)):
        if part.endswith(".bin"):
            assert (one / part).read_bytes() == (two / part).read_bytes(), part


def test_sizes_are_printed_in_the_unit_that_reads():
    from deit.train.teacher_cache import format_bytes

    assert [format_bytes(n) for n in (0, 1023, 1024, 3500, 5 * 2**20, 3 * 2**29)] == [
        "0 B", "1023 B", "1.0 KiB", "3.4 KiB", "5.0 MiB", "1.5 GiB"]
