"""amp: auto — bf16 where the hardware computes it natively, fp32 elsewhere; the choice is printed and recorded.
DEIT_ASSUME_BF16 tells ``auto`` which capability to assume, so both resolutions run on any machine."""

from __future__ import annotations

import subprocess

import pytest
import torch
import yaml
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.runtime import precision
from deit.runtime.precision import ASSUME_BF16_ENV
from deit.train import load_config
from deit.train.components import resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def probe(monkeypatch):
    """The hardware probe decides (the variable unset); the test sets what the CPU has."""
    monkeypatch.delenv(ASSUME_BF16_ENV, raising=False)
    return lambda instructions: monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: instructions)


@pytest.mark.parametrize("instructions, amp, teacher", [
    ("AVX512_BF16", "bf16", "bfloat16"), ("AMX", "bf16", "bfloat16"), (None, "none", "float32")])
def test_auto_follows_the_cpu(probe, instructions, amp, teacher):
    probe(instructions)
    cfg = load_config("digits-deit-distilled")
    assert cfg.amp == "auto" and cfg.teacher.dtype == "auto"
    resolved, line = resolve_precision(cfg, CPU)
    assert resolved.amp == amp and resolved.teacher.dtype == teacher
    assert ("bf16 autocast" if amp == "bf16" else "fp32") in line and (instructions or "no AVX512_BF16") in line
    explicit, _ = resolve_precision(load_config("digits-deit-distilled", ["amp=none", "teacher.dtype=float32"]), CPU)
    assert explicit.amp == "none" and explicit.teacher.dtype == "float32"  # an explicit choice is kept


@pytest.mark.parametrize("assume, amp, teacher", [("1", "bf16", "bfloat16"), ("0", "none", "float32")])
def test_the_variable_decides_auto_whatever_the_cpu_has(monkeypatch, assume, amp, teacher):
    # The probe would say the opposite: the variable wins, and the line says it came from the variable.
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None if assume == "1" else "AMX")
    monkeypatch.setenv(ASSUME_BF16_ENV, assume)
    assert precision.resolve_amp("auto", CPU) == (amp, f"{ASSUME_BF16_ENV}={assume} says this CPU "
                                                       f"{'computes' if assume == '1' else 'does not compute'} bf16 "
                                                       "natively")
    assert precision.resolve_amp("none", CPU)[0] == "none" and precision.resolve_amp("bf16", CPU)[0] == "bf16"
    resolved, line = resolve_precision(load_config("digits-deit-distilled"), CPU)
    assert resolved.amp == amp and resolved.teacher.dtype == teacher and f"{ASSUME_BF16_ENV}={assume}" in line
    # amp pinned, teacher.dtype auto: the teacher's part of the line names the variable too.
    pinned, line = resolve_precision(load_config("digits-deit-distilled", ["amp=none"]), CPU)
    assert pinned.teacher.dtype == teacher and "(amp=none: as configured)" in line
    assert f"teacher in {teacher} (teacher.dtype=auto: {ASSUME_BF16_ENV}={assume} says" in line


def test_a_bad_value_of_the_variable_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(ASSUME_BF16_ENV, "yes")
    with pytest.raises(ValueError, match=f"{ASSUME_BF16_ENV}='yes': use 1 .* 0 .* unset"):
        precision.resolve_amp("auto", CPU)


@pytest.mark.parametrize("assume", ["0", "1"])
def test_the_run_records_and_prints_the_mode_chosen(tmp_path, assume):
    """The CLI as a user runs it: the line names the variable, config.yaml records the mode, and the same command
    continues the run (auto resolves to what the run recorded)."""
    overrides = [o for o in tiny_overrides(tmp_path / "run", extra=("epochs=1",)) if o != "amp=none"]
    cmd = [*DEIT, "train", "--config", "digits-convnet-teacher", *overrides]
    env = {**SUBPROCESS_ENV, ASSUME_BF16_ENV: assume}
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    shown = "bf16 autocast" if assume == "1" else "fp32"
    verb = "computes" if assume == "1" else "does not compute"
    assert f"precision: {shown} (amp=auto: {ASSUME_BF16_ENV}={assume} says this CPU {verb} bf16 natively)" \
        in first.stdout
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["amp"] == ("bf16" if assume == "1" else
                                                                                     "none")
    if assume == "1":  # one way is enough: the same command continues the run
        again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "is complete: 1 epochs" in again.stdout, again.stderr


def test_bf16_needs_no_native_support_but_auto_never_picks_it_without(probe):
    probe(None)
    assert precision.resolve_amp("auto", CPU)[0] == "none" and precision.resolve_amp("bf16", CPU)[0] == "bf16"
    with pytest.raises(ValueError, match="resolve 'auto'"):
        precision.autocast(CPU, "auto")
