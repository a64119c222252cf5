"""A tiny-budget study end to end through the CLI: every method's rows and the three files."""

from __future__ import annotations

import json

import pytest

from deit.cli import main
from deit.reproduce import ROWS, aggregate, load_rows
from deit.reproduce.methods import get_method
from deit.reproduce.regime import Regime
from deit.reproduce.runs import run_method

# Every run in fp32 whatever the CPU (amp and teacher.dtype are auto in the presets): same numbers, and no emulated
# bf16 (far slower) where the CPU lacks AVX512_BF16 but DEIT_ASSUME_BF16=1 says otherwise.
FP32 = ("amp=none", "teacher.dtype=float32")


@pytest.mark.slow
def test_tiny_study_writes_every_row_and_file(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["reproduce", "--train-per-class", "3", "--seeds", "0", "--epochs", "1", "--output", str(out),
                 "--set", "data.batch_size=10", *FP32, "--workers", "1"])
    assert code == 0
    rows = load_rows(out / "results.json")
    assert [r["method"] for r in rows] == list(ROWS)  # every method, every head, in order
    for r in rows:
        assert set(r) == {"method", "seed", "top1", "top5", "agreement", "seconds"}
        assert r["seed"] == 0 and 0.0 <= r["top1"] <= r["top5"] <= 1.0 and 0.0 <= r["agreement"] <= 1.0
        assert r["seconds"] > 0
    teacher = next(r for r in rows if r["method"] == "teacher")
    assert teacher["agreement"] == 1.0
    # The hard-distilled heads of one run share its training time; each run keeps its run directory.
    assert len({r["seconds"] for r in rows if r["method"].startswith("deit-dist-hard-")}) == 1
    for method in ("teacher", "deit-none", "deit-cls-soft", "deit-cls-hard", "deit-dist-hard", "deit-dist-soft"):
        run = out / "runs" / "seed0" / method
        assert (run / "config.yaml").is_file() and (run / "last.safetensors").is_file()
        cfg = (run / "config.yaml").read_text()
        assert "train_per_class: 3" in cfg and "epochs: 1\n" in cfg
    assert "token: cls" in (out / "runs" / "seed0" / "deit-cls-hard" / "config.yaml").read_text()
    # The runner does not validate (the study evaluates each run once) and the teacher's predictions on the
    # validation split are recorded once, for every student's agreement.
    assert not (out / "runs" / "seed0" / "deit-none" / "best.safetensors").exists()
    assert (out / "runs" / "seed0" / "teacher" / "val_predictions.pt").is_file()
    # The distilled students read the seed's teacher-output cache (the teacher ran once for all four of them) and
    # end as they would have with the live teacher.
    for method in ("deit-cls-soft", "deit-cls-hard", "deit-dist-hard", "deit-dist-soft"):
        assert "read from the cache" in (out / "runs" / "seed0" / method / "train.log").read_text()
    assert (out / "runs" / "seed0" / "teacher-cache" / "cache.json").is_file()
    saved = json.loads((out / "study.json").read_text())["regime"]
    regime = Regime(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    for method in ("deit-dist-soft", "deit-cls-hard"):
        live = run_method(get_method(method), regime, seed=0, epochs=1, run_dir=tmp_path / f"live-{method}",
                          teacher_checkpoint=out / "runs" / "seed0" / "teacher" / "last.safetensors")
        cached = [r for r in rows if r["method"].startswith(method)]
        assert [{k: r[k] for k in ("method", "top1", "top5", "agreement")} for r in live.rows] == \
            [{k: r[k] for k in ("method", "top1", "top5", "agreement")} for r in cached]

    md = (out / "table.md").read_text()
    summaries = aggregate(rows)
    for s in summaries:
        assert f"`{s.method}`" in md
        assert f"{100 * s.stats['top1'].mean:.2f} ± n/a" in md  # one seed: no std
    assert "--train-per-class 3 --seeds 0" in md
    assert (out / "table.png").read_bytes()[:4] == b"\x89PNG"
    study = json.loads((out / "study.json").read_text())
    assert study["plan"]["student_epochs"] == 1 and study["train_images"] == 30
    printed = capsys.readouterr().out
    assert "deit-dist-soft-avg" in printed and "the paper's claim" in printed


def test_existing_study_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "results.json").write_text("[]")
    assert main(["reproduce", "--seeds", "0", "--epochs", "1", "--output", str(tmp_path)]) == 2
    assert "choose another --output" in capsys.readouterr().err
    (tmp_path / "study.json").write_text("{}")
    assert main(["reproduce", "--seeds", "0", "--epochs", "1", "--output", str(tmp_path)]) == 2
    assert f"deit reproduce --resume {tmp_path}" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "[]"  # nothing already there is touched


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert main(["reproduce", "--seeds", "a,b"]) == 2  # argparse's complaint: one line, exit code 2
    assert "comma-separated integers" in capsys.readouterr().err
    code = main(["reproduce", "--train-per-class", "2", "--seeds", "0", "--epochs", "1", "--output", str(tmp_path)])
    assert code == 2
    assert "data.batch_size" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_runs_give_the_same_results_as_one_at_a_time(tmp_path):
    """Two seeds on two worker processes: every row equals the in-process run's (only the timings differ)."""
    args = ["reproduce", "--train-per-class", "3", "--seeds", "0,1", "--epochs", "2,1", "--set", "data.batch_size=10",
            *FP32]
    assert main([*args, "--workers", "1", "--output", str(tmp_path / "one")]) == 0
    assert main([*args, "--workers", "2", "--output", str(tmp_path / "two")]) == 0
    one, two = (load_rows(tmp_path / d / "results.json") for d in ("one", "two"))
    assert [(r["method"], r["seed"]) for r in two] == [(r["method"], r["seed"]) for r in one]  # same order
    assert len(one) == 2 * len(ROWS)
    for a, b in zip(one, two, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert json.loads((tmp_path / "two" / "study.json").read_text())["workers"] == 2
    assert "2 runs at once" in (tmp_path / "two" / "table.md").read_text()


@pytest.mark.slow
def test_a_stopped_study_resumes_to_the_same_results(tmp_path, capsys):
    import shutil

    args = ["reproduce", "--train-per-class", "3", "--seeds", "0", "--epochs", "2,1", "--set", "data.batch_size=10",
            *FP32, "--workers", "1"]
    assert main([*args, "--output", str(tmp_path / "whole")]) == 0
    whole = load_rows(tmp_path / "whole" / "results.json")
    # A study stopped after three runs: results.json has teacher and deit-none; deit-cls-soft had finished training
    # but was not recorded; the later runs never started.
    stopped = tmp_path / "stopped"
    shutil.copytree(tmp_path / "whole", stopped)
    (stopped / "results.json").write_text(json.dumps(whole[:2]))
    for method in ("deit-cls-hard", "deit-dist-hard", "deit-dist-soft"):
        shutil.rmtree(stopped / "runs" / "seed0" / method)
    (stopped / "table.md").unlink()
    capsys.readouterr()
    assert main(["reproduce", "--resume", str(stopped)]) == 0
    assert "2 of 6 runs already done" in capsys.readouterr().out
    resumed = load_rows(stopped / "results.json")
    assert [r["method"] for r in resumed] == [r["method"] for r in whole]
    for a, b in zip(whole, resumed, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert json.loads((stopped / "study.json").read_text())["status"] == "done"
    assert (stopped / "table.md").is_file()
    assert main(["reproduce", "--resume", str(tmp_path / "nothing")]) == 2  # no study.json: a clear error
    assert "no study.json" in capsys.readouterr().err
