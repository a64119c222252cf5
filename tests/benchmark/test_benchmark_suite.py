"""The benchmark's code path end to end on a tiny model, so it cannot rot: rows, keys, finite positive figures."""

import json
import math

import pytest
import torch

from deit.benchmark import BenchmarkConfig, Row, format_table, race, run_benchmark, to_json
from deit.benchmark.memory import peak_memory_mb
from deit.cli import main

pytest.importorskip("transformers")

TINY = {"depth": 1, "img_size": 32}
KEYS = {"task", "model", "batch", "dtype", "ours_img_s", "peer_img_s", "ratio", "ours_latency_ms",
        "ours_spread_pct", "ours_pct_of_gemm", "gemm_gflops"}


def _numbers(row: dict):
    for key, value in row.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "peer_max_abs_diff":
            yield key, value


@pytest.fixture(scope="module")
def result():
    config = BenchmarkConfig(
        models=("deit_tiny_patch16_224",), train_models=("deit_tiny_distilled_patch16_224",), batch_sizes=(4,),
        train_batch_size=4, repeats=2, train_repeats=1, threads=1, data_images=4, gemm_size=128,
        model_overrides=TINY,
    )
    return run_benchmark(config)


def test_every_task_gives_rows_with_the_documented_keys(result):
    header, rows = result
    assert {r.task for r in rows} == {"gemm", "inference", "train", "train+teacher", "train+cache", "data"}
    assert header["device"] and header["torch"] == torch.__version__
    payload = json.loads(to_json(rows, header))
    for row in payload["rows"]:
        assert row.keys() >= KEYS
        for key, value in _numbers(row):
            # A spread (one round) or a peak above start (memory reused) may be exactly zero; nothing is negative.
            floor_ok = value >= 0 if key.endswith(("spread_pct", "peak_mem_mb")) else value > 0
            assert math.isfinite(value) and floor_ok, (row["task"], key, value)


def test_model_rows_compare_with_the_hf_twin_of_the_same_weights(result):
    _, rows = result
    compared = [r for r in rows if r.task in ("inference", "train", "train+teacher", "train+cache")]
    assert len(compared) == 4
    for r in compared:
        assert r.peer in ("hf-eager", "hf-sdpa") and set(r.peer_variants_img_s) == {"hf-eager", "hf-sdpa"}
        assert r.ratio == pytest.approx(r.ours_img_s / r.peer_img_s)
        assert r.peer_img_s == max(r.peer_variants_img_s.values())
        assert r.peer_max_abs_diff < 1e-4  # the twin really carries our weights
        assert r.ours_pct_of_gemm == pytest.approx(100 * r.ours_gflops / r.gemm_gflops)
    train = next(r for r in rows if r.task == "train+teacher")
    assert train.gflop_per_image > next(r for r in rows if r.task == "train").gflop_per_image  # teacher counted
    cached = next(r for r in rows if r.task == "train+cache")  # teacher outputs read from disk: not counted
    assert cached.gflop_per_image == next(r for r in rows if r.task == "train").gflop_per_image
    assert "teacher-output cache" in cached.note
    assert train.ours_peak_mem_mb is not None and train.peer_peak_mem_mb is not None
    assert "ratio" in format_table(rows, result[0])


def test_cli_prints_json_rows(capsys):
    code = main(["benchmark", "--json", "--models", "deit_tiny_patch16_224", "--img-size", "32", "--batch-sizes",
                 "2", "--tasks", "inference", "--repeats", "1", "--threads", "1", "--no-peer"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    (row,) = payload["rows"]
    assert row["task"] == "inference" and row["batch"] == 2 and row["peer_img_s"] is None
    assert row["ours_img_s"] > 0 and payload["threads"] == 1


def test_cli_rejects_bad_settings(capsys):
    assert main(["benchmark", "--device", "tpu", "--tasks", "gemm"]) == 2
    assert "cpu or cuda" in capsys.readouterr().err


def test_race_alternates_and_counts_every_round():
    calls = []
    samples = race({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                   repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotated rounds
    assert all(len(s.seconds) == 3 and s.median > 0 for s in samples.values())


def test_peak_memory_sees_a_large_temporary():
    mb, kind = peak_memory_mb(lambda: torch.ones(64, 2**20).sum(), torch.device("cpu"))  # 256 MiB
    assert mb > 200, (mb, kind)


def test_row_json_rounds_but_keeps_none():
    row = Row(task="inference", model="m", batch=1, dtype="fp32", device="cpu", ours_img_s=123.456789)
    d = row.to_dict()
    assert d["ours_img_s"] == 123.5 and d["peer_img_s"] is None


def test_datasheet_peak_matches_the_most_specific_device_name():
    from deit.benchmark.gemm import datasheet_tflops

    assert datasheet_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert datasheet_tflops("NVIDIA H100 PCIe", "bf16") == 756.5
    assert datasheet_tflops("AMD EPYC", "fp32") is None


def test_quick_config_keeps_the_first_model_and_drops_the_teacher_row():
    from deit.benchmark import quick_config

    quick = quick_config(BenchmarkConfig())
    assert quick.models == ("deit_tiny_patch16_224",) and "train+teacher" not in quick.tasks
    assert quick.repeats <= 3 and quick.train_batch_size <= 32


def test_compile_wraps_every_contender_alike_and_races_our_eager_model(monkeypatch):
    # Compiling is replaced by a recorder (a real compile of three models takes minutes on a CPU): what is
    # checked is the wiring, that ours and HF's twins get the same treatment and our eager model runs beside them.
    import deit.benchmark.common as common

    wrapped = []
    monkeypatch.setattr(common, "compile_step", lambda fn: wrapped.append(fn) or fn)
    config = BenchmarkConfig(
        models=("deit_tiny_patch16_224",), train_models=("deit_tiny_distilled_patch16_224",), batch_sizes=(2,),
        train_batch_size=2, repeats=1, train_repeats=1, threads=1, gemm_size=64, model_overrides=TINY,
        tasks=("inference", "train"), compile=True, attn_impl="math",
    )
    header, rows = run_benchmark(config)
    assert len(wrapped) == 6  # ours, hf-eager, hf-sdpa: inference forward, then training forward + loss
    for row in rows:
        assert row.compile and row.ours_eager_img_s > 0
        assert all(f"{label}: first compiled call" in row.note for label in ("ours", "hf-eager", "hf-sdpa"))
    table = format_table(rows, header)
    assert "compiled/eager" in table
    assert header["attention"].startswith("math")
    # "deit_tiny_distilled_patch16_224 +compile" is wider than the model column's usual width: the columns widen,
    # so every row's batch figure starts where the header's "batch" does, a space after the model
    head, _, *lines = table.splitlines()[1:]
    start = head.index("batch")
    for line, row in zip(lines, rows, strict=False):
        assert line[start:].startswith(str(row.batch)) and line[start - 1] == " ", line


def test_benchmark_rejects_an_unknown_attention_kernel(capsys):
    assert main(["benchmark", "--attn-impl", "fast", "--tasks", "gemm"]) == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'fast' is not one of auto, sdpa, math"):
        BenchmarkConfig(attn_impl="fast")
