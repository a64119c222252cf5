"""amp: auto — bf16 where the hardware computes it natively, fp32 elsewhere; the choice is printed and recorded."""

from __future__ import annotations

import pytest
import torch
import yaml
from train_support import tiny_overrides

from deit.runtime import precision
from deit.train import load_config, train
from deit.train.components import resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("instructions, amp, teacher", [
    ("AVX512_BF16", "bf16", "bfloat16"), ("AMX", "bf16", "bfloat16"), (None, "none", "float32")])
def test_auto_follows_the_cpu(monkeypatch, instructions, amp, teacher):
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: instructions)
    cfg = load_config("digits-deit-distilled")
    assert cfg.amp == "auto" and cfg.teacher.dtype == "auto"
    resolved, line = resolve_precision(cfg, CPU)
    assert resolved.amp == amp and resolved.teacher.dtype == teacher
    assert ("bf16 autocast" if amp == "bf16" else "fp32") in line and (instructions or "no AVX512_BF16") in line
    explicit, _ = resolve_precision(load_config("digits-deit-distilled", ["amp=none", "teacher.dtype=float32"]), CPU)
    assert explicit.amp == "none" and explicit.teacher.dtype == "float32"  # an explicit choice is kept


def test_the_run_records_and_prints_the_mode_chosen(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None)
    overrides = [o for o in tiny_overrides(tmp_path / "run", extra=("epochs=1",)) if o != "amp=none"]
    train(load_config("digits-convnet-teacher", overrides))
    assert "precision: fp32 (amp=auto: this CPU has no AVX512_BF16 or AMX" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["amp"] == "none"
    # The same command again is the same run ("auto" resolves to what the run recorded), which is complete.
    train(load_config("digits-convnet-teacher", overrides))
    assert "run is complete: 1 epochs" in capsys.readouterr().out


def test_bf16_needs_no_native_support_but_auto_never_picks_it_without(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None)
    assert precision.resolve_amp("auto", CPU)[0] == "none" and precision.resolve_amp("bf16", CPU)[0] == "bf16"
    with pytest.raises(ValueError, match="resolve 'auto'"):
        precision.autocast(CPU, "auto")
