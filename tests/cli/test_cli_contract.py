"""The command line's contract, over every registered verb: `--help` works, and bad input (a wrong flag, a missing
file, a bad value) is one line naming the problem, exit code 2, never a traceback (unless --debug)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from deit.cli import build_parser, main

MISSING = "/nonexistent/deit-test/file.safetensors"
# One bad input per verb (a new verb must add its own, or test_every_verb_has_a_bad_input_case fails).
BAD_INPUT = {
    ("info",): ["info", "deit_tiny_patch16_22"],
    ("data", "check"): ["data", "check", "/nonexistent/deit-test"],
    ("train",): ["train", "--config", "digits-deit-distilled", "optim.lrr=1e-3", "--dry-run"],
    ("eval",): ["eval", "--checkpoint", MISSING, "--data", "digits"],
    ("plot",): ["plot", "/nonexistent/deit-test"],
    ("demo",): ["demo", "--student", "epochs=zero"],
    ("convert",): ["convert", MISSING, "out.safetensors"],
    ("predict",): ["predict", "img.png", "--checkpoint", MISSING],
    ("export",): ["export", MISSING, "--format", "onnx", "-o", "x.onnx"],
    ("analyze", "tokens"): ["analyze", "tokens", MISSING, "--data", "digits"],
    ("analyze", "attention"): ["analyze", "attention", MISSING, "img.png"],
    ("analyze", "agreement"): ["analyze", "agreement", MISSING, "--teacher", MISSING, "--data", "digits"],
    ("benchmark",): ["benchmark", "--batch-sizes", "many"],
    ("reproduce",): ["reproduce", "--seeds", "0,x"],
    ("teacher-cache", "build"): ["teacher-cache", "build", "--config", "digits-deit-distilled", "--output", "x",
                                 "data.nope=1"],
    ("teacher-cache", "info"): ["teacher-cache", "info", "/nonexistent/deit-test"],
}


def _verbs(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable verb path, e.g. ("train",), ("analyze", "tokens")."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [v for name, p in subs[0].choices.items() for v in _verbs(p, (*prefix, name))]


VERBS = _verbs(build_parser())


def test_every_verb_has_a_bad_input_case():
    assert set(VERBS) <= set(BAD_INPUT), f"add a bad input for {set(VERBS) - set(BAD_INPUT)}"


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_help_works(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*verb, "--help"])
    assert exit_.value.code == 0
    assert f"usage: deit {' '.join(verb)}" in capsys.readouterr().out


@pytest.mark.parametrize("verb", [v for v in BAD_INPUT if v in VERBS], ids=" ".join)
def test_bad_input_is_one_line_and_exit_2(verb, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a failing verb might write lands in the repository
    assert main(BAD_INPUT[verb]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"deit {verb[0]}: error: ") and "Traceback" not in captured.err + captured.out


def test_a_wrong_flag_names_the_verb_and_its_help(capsys):
    assert main(["train", "--config", "digits-deit-distilled", "--learning-rate=3"]) == 2
    assert capsys.readouterr().err.strip() == ("deit train: error: unrecognized arguments: --learning-rate=3 "
                                               "(see `deit train --help`)")


def test_debug_shows_the_traceback(capsys, monkeypatch):
    assert main(["--debug", "eval", "--checkpoint", MISSING, "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("does not exist")
    monkeypatch.setenv("DEIT_DEBUG", "1")
    assert main(["plot", "/nonexistent/deit-test"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_the_installed_command(tmp_path):
    """The real entry point: `deit --help` (the first command many users type) and a bad input's exit code."""
    ok = subprocess.run([sys.executable, "-m", "deit", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "usage: deit" in ok.stdout and "benchmark" in ok.stdout and not ok.stderr
    bad = subprocess.run([sys.executable, "-m", "deit", "predict", "x.png", "--checkpoint", MISSING],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
