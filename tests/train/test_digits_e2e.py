"""End to end on the embedded digits data: `deit demo` (teacher, then a distilled DeiT) with short schedules."""

from __future__ import annotations

import json

import pytest

from deit.cli import main


@pytest.mark.slow
def test_short_demo_on_digits_clears_chance_by_far(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main([
        "demo", "--output", str(out),
        # fp32 on every machine (amp: auto is bf16 on a CPU with AVX512_BF16, and emulated bf16 is far slower).
        "--teacher", "epochs=4", "progress=false", "amp=none",
        # A 2-block student with more, smaller steps and no regularisation: what learns fastest in a few epochs.
        "--student", "epochs=8", "progress=false", "amp=none", "teacher.dtype=float32", "model.args.depth=2",
        "model.args.embed_dim=64", "model.args.num_heads=2", "data.batch_size=32", "schedule.warmup_epochs=1",
        "model.drop_path=0",
        "data.scale=[1.0, 1.0]", "data.ratio=[1.0, 1.0]", "data.smoothing=0",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    for key in ("teacher_top1", "student_top1_avg", "student_top1_cls", "student_top1_dist", "agreement"):
        assert 0.0 <= summary[key] <= 1.0
        assert f"{summary[key]:.4f}" in printed
    assert summary["seconds"] > 0
    # Chance is 0.10 on 10 classes.
    assert summary["teacher_top1"] >= 0.5
    assert summary["student_top1_avg"] >= 0.5
    for run in ("teacher", "student"):
        for name in ("config.yaml", "metrics.jsonl", "last.safetensors", "best.safetensors", "state.pt",
                     "summary.json", "plots/loss.png", "plots/lr.png", "plots/top1.png"):
            assert (out / run / name).is_file(), f"{run}/{name}"
