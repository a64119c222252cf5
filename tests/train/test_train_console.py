"""What a new user reads from `deit train` and the verbs around it: the student as it really is, a line every
`log_every` steps and one per epoch, 1-based epochs everywhere (console and metrics.jsonl), a finished run that
says so, `deit eval` scoring a run's checkpoint as the run did, a missing teacher that says how to make it, and
`deit teacher-cache build`'s closing line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.checkpoints import save_checkpoint
from deit.cli import main
from deit.models import build_architecture, describe_model, get_entry
from deit.runtime import precision

TRAIN = [*DEIT, "train", "--config", "digits-convnet-teacher"]
# 96 images, batch 8: 12 steps an epoch; a step line every 5 steps.
OVERRIDES = ("epochs=2", "log_every=5")
EVAL_DATA = ["--data", "synthetic", "--set", "img_size=16", "synthetic_classes=4", "synthetic_train=96",
             "synthetic_val=40"]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=cwd, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    """A finished two-epoch run of the tiny distilled-token student, and what `deit train` printed."""
    out = tmp_path_factory.mktemp("console") / "run"
    proc = _cli(*TRAIN, *tiny_overrides(out, extra=OVERRIDES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_the_banner_names_the_student_as_it_is(finished):
    _, stdout = finished
    assert ("student ViT dim 32, depth 2, 2 heads, patch 4, 16 px, distillation token "
            "(deit_tiny_distilled_patch16_224 with overrides): ") in stdout
    # A registered architecture is called by its name; another family without a describe() by its fields.
    assert describe_model(get_entry("deit_small_patch16_224").config, "deit_small_patch16_224") == (
        "deit_small_patch16_224")
    small = build_architecture("resnet9", num_classes=10, widths=(8, 16, 32, 64)).config
    assert describe_model(small, "resnet9").startswith("resnet9 widths (8, 16, 32, 64)")
    assert describe_model(small, "resnet9").endswith("(resnet9 with overrides)")


def test_a_line_every_log_every_steps_and_one_per_epoch_with_1_based_epochs(finished):
    run, stdout = finished
    steps = [line for line in stdout.splitlines() if line.startswith("step ")]
    records = _records(run, "step")
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert len(steps) == len(records)
    for line, r in zip(steps, records, strict=True):
        m = re.fullmatch(r"step (\d+)/24 \(epoch (\d)/2\): loss (\S+), lr (\S+), (\d+) img/s, ETA \d+:\d\d:\d\d", line)
        assert m, line
        assert int(m[1]) == r["step"] and int(m[2]) == r["epoch"] and m[3] == f"{r['loss']:.4f}"
    # The epoch of a step is the epoch it is in, 1-based, as the console and the epoch records count.
    assert [r["epoch"] for r in records] == [1, 1, 2, 2]
    assert [r["epoch"] for r in _records(run, "epoch")] == [1, 2]
    epochs = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    for n, (line, r) in enumerate(zip(epochs, _records(run, "epoch"), strict=True), start=1):
        assert re.fullmatch(rf"epoch {n}/2: train loss {r['train_loss']:.4f}, \d+\.\d s, \d+ img/s; "
                            rf"val loss {r['loss']:.4f} top1 {r['top1']:.4f} top5 .*", line), line


def test_rerunning_a_finished_run_says_it_is_complete_and_writes_nothing(finished):
    run, _ = finished
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    proc = _cli(*TRAIN, *tiny_overrides(run, extra=OVERRIDES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert proc.stdout.splitlines() == [
        f"{run} is complete: 2 epochs, final top-1 {summary['final']['top1']:.4f} (summary.json); nothing to do. "
        f"To train longer: `deit train --resume {run} epochs=N` with N > 2; to start over: the same command with "
        "--fresh (the run is moved aside)"]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # metrics.jsonl included


def test_resume_counts_epochs_from_1(finished, tmp_path, capsys):
    run = tmp_path / "longer"
    shutil.copytree(finished[0], run)
    assert main(["train", "--resume", str(run), "epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "resuming at epoch 3/3, batch 0, step 24" in out
    assert re.search(r"^epoch 3/3: train loss", out, re.M) and "epoch 4" not in out


def test_eval_of_the_best_checkpoint_gives_the_runs_figure(finished, monkeypatch, capsys):
    run, _ = finished
    summary = json.loads((run / "summary.json").read_text())
    # The run trained with amp=none: the same precision on both sides.
    proc = _cli(*DEIT, "eval", "--checkpoint", str(run / "best.safetensors"), *EVAL_DATA, "--amp", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["top1"] == summary["best_top1"]
    assert "precision: fp32 (amp=none: as configured)" in proc.stderr  # beside the JSON, not in it
    # The default is amp=auto, resolved as training resolves it (here: a CPU without native bf16).
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None)
    monkeypatch.delenv(precision.ASSUME_BF16_ENV, raising=False)  # the CPU as patched, not as the suite assumes
    assert main(["eval", "--checkpoint", str(run / "best.safetensors"), *EVAL_DATA, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "precision: fp32 (amp=auto: this CPU has no AVX512_BF16 or AMX" in out
    assert re.search(rf"^  top1 +{summary['best_top1']:.4f}$", out, re.M), out


def test_a_missing_teacher_says_it_is_the_teacher_and_how_to_make_it(tmp_path, capsys):
    # The distilled CIFAR preset's default teacher is the CIFAR teacher preset's run; synthetic data, no download.
    proc = _cli(*DEIT, "train", "--config", "cifar10-deit-distilled", "data.dataset=synthetic", "epochs=1",
                cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert ("teacher.checkpoint runs/cifar10-airbench-teacher/best.safetensors does not exist: it is the teacher "
            "checkpoint the student is distilled from; train the teacher first: `deit train --config "
            "cifar10-airbench-teacher` writes it") in proc.stderr
    assert not any(tmp_path.iterdir())  # said before anything was made
    # Any other missing teacher checkpoint: what it is and how to train one.
    args = tiny_overrides(tmp_path / "r", extra=("distillation.type=hard", f"teacher.checkpoint={tmp_path}/t.st"))
    assert main(["train", "--config", "digits-convnet-teacher", *args]) == 2
    err = capsys.readouterr().err
    assert "it is the teacher checkpoint the student is distilled from; train a teacher first" in err
    assert not (tmp_path / "r").exists()


def test_teacher_cache_build_ends_with_what_it_built_where_and_how_long(tmp_path, capsys):
    torch.manual_seed(1)
    teacher = tmp_path / "teacher.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=4, img_size=16), teacher)
    cache = tmp_path / "cache"
    args = tiny_overrides(tmp_path / "unused", extra=("distillation.type=hard", f"teacher.checkpoint={teacher}"))
    build = ["teacher-cache", "build", "--config", "digits-convnet-teacher", *args, "--output", str(cache),
             "--no-progress"]
    assert main(build) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(rf"teacher cache {cache}: argmax, 2 epochs x 1 rank\(s\) \(\S+ \S+\) complete: computed 2 "
                        rf"part\(s\) in \d+\.\d s; train with distillation.teacher_cache={cache}", last), last
    assert main(build) == 0
    assert "complete: nothing to compute, every part was there" in capsys.readouterr().out.splitlines()[-1]
