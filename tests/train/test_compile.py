"""compile: true trains the same as eager (the same loss at every step, within rounding, stochastic depth and mixup
included), says what compiling cost and gained, and saves the same state-dict keys."""

from __future__ import annotations

import json

import pytest
from train_support import tiny_overrides

from deit.train import load_config, train


def _step_losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "step"]


@pytest.mark.slow
def test_compiled_training_follows_the_eager_loss_trajectory(tmp_path, capsys):
    runs = {}
    for compiled in (False, True):
        cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / f"compile-{compiled}", extra=(
            "epochs=1", f"compile={str(compiled).lower()}", "model.attn_impl=math")))
        runs[compiled] = train(cfg)
    out = capsys.readouterr().out
    eager, compiled = (_step_losses(runs[c].run_dir) for c in (False, True))
    assert len(eager) == len(compiled) == 12
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
    assert eager[0] != eager[-1]  # the weights did move: the trajectory says something
    # Only the compiled run measures itself: the compile time after its first compiled step, then the speed-up.
    lines = [line for line in out.splitlines() if line.startswith("compile: ") and line not in ("compile: true",
                                                                                                 "compile: false")]
    assert len(lines) == 2, out
    assert "compiled in" in lines[0] and "an eager step takes" in lines[0]
    assert "against" in lines[1] and lines[1].endswith("x")
    assert set(runs[True].model.state_dict()) == set(runs[False].model.state_dict())
