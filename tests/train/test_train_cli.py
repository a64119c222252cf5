"""`deit train` / `deit eval` / `deit plot` from the command line."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from PIL import Image
from train_support import tiny_overrides

from deit.cli import main


def test_dry_run_prints_the_resolved_config(tmp_path, capsys):
    preset = ["train", "--dry-run", "--config", "deit-tiny-distilled_pt-4xb256_in1k", "optim.lr=1e-3"]
    # The preset's data.root (data/imagenet) is a placeholder: a dry run checks it, as the run would.
    assert main(preset) == 2
    assert "data.root data/imagenet does not exist" in capsys.readouterr().err
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "n01440764" / "a.JPEG")
    assert main([*preset, f"data.root={tmp_path}"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["name"] == "deit_tiny_distilled_patch16_224" and cfg["data"]["root"] == str(tmp_path)
    assert cfg["optim"]["lr"] == 1e-3 and cfg["data"]["batch_size"] == 256
    assert cfg["teacher"]["model"] == "regnety_160" and cfg["distillation"]["type"] == "hard"


def test_list_presets(capsys):
    assert main(["train", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert "deit-base-distilled_ft-16xb32_in1k-384px" in names and "digits-deit-distilled" in names


def test_typo_exits_2_naming_the_nearest_key(capsys):
    assert main(["train", "--config", "digits-convnet-teacher", "optim.weight_decai=0.1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'optim.weight_decai'" in err and "did you mean 'optim.weight_decay'" in err


def test_missing_config_and_bad_resume_are_clear(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_distillation_needs_a_distilled_student(tmp_path, capsys):
    from deit.checkpoints import save_checkpoint
    from deit.models import build_architecture

    teacher = tmp_path / "t.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=4, img_size=16), teacher)
    args = tiny_overrides(tmp_path / "r", distilled=False, extra=("distillation.type=hard",
                                                                 f"teacher.checkpoint={teacher}"))
    assert main(["train", "--config", "digits-convnet-teacher", *args]) == 2
    assert "use a *_distilled_* model" in capsys.readouterr().err
    # No teacher at all.
    args = tiny_overrides(tmp_path / "r1", extra=("distillation.type=soft",))
    assert main(["train", "--config", "digits-convnet-teacher", *args]) == 2
    assert "needs a teacher: set teacher.checkpoint" in capsys.readouterr().err
    # A teacher trained on another class count: the error says to fine-tune it first.
    save_checkpoint(build_architecture("resnet_digits", num_classes=10, img_size=16), teacher)
    args = tiny_overrides(tmp_path / "r2", extra=("distillation.type=hard", f"teacher.checkpoint={teacher}"))
    assert main(["train", "--config", "digits-convnet-teacher", *args]) == 2
    err = capsys.readouterr().err
    assert "predicts 10 classes but the dataset has 4" in err and "Fine-tune the teacher" in err


@pytest.mark.slow
def test_train_eval_plot_and_finetune_with_distillation(tmp_path, capsys):
    from deit.checkpoints import load_checkpoint, save_checkpoint
    from deit.models import build_architecture

    run = tmp_path / "run"
    assert main(["train", "--config", "digits-convnet-teacher", *tiny_overrides(run, extra=("epochs=1",))]) == 0
    out = capsys.readouterr().out
    assert "effective batch 8" in out and "lr 0.002" in out
    model = load_checkpoint(run / "last.safetensors")
    assert model.class_names == [f"class_{i}" for i in range(4)]
    summary = json.loads((run / "summary.json").read_text())

    data = ["--data", "synthetic", "--set", "img_size=16", "synthetic_classes=4", "synthetic_train=96",
            "synthetic_val=40"]
    assert main(["eval", "--checkpoint", str(run / "last.safetensors"), *data, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["top1"] == summary["final"]["top1"] and metrics["num_samples"] == 40
    assert {"top1_cls", "top1_dist", "top5", "loss"} <= set(metrics)

    # Fine-tune that checkpoint at another resolution and class count, with hard distillation.
    teacher = tmp_path / "t.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=3, img_size=24), teacher)
    ft = tmp_path / "ft"
    args = tiny_overrides(ft, extra=("epochs=1", "model.img_size=24", "data.img_size=24", "data.synthetic_classes=3",
                                     f"model.finetune={run / 'last.safetensors'}", "distillation.type=hard",
                                     f"teacher.checkpoint={teacher}"))
    assert main(["train", "--config", "digits-convnet-teacher", *args]) == 0
    tuned = load_checkpoint(ft / "last.safetensors")
    assert tuned.num_classes == 3 and tuned.config.img_size == 24 and tuned.pos_embed.shape[1] == 2 + 36
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ft / "last.safetensors"), "--teacher", str(teacher), "--data",
                 "synthetic", "--set", "img_size=24", "synthetic_classes=3", "synthetic_val=30"]) == 0
    printed = capsys.readouterr().out
    assert "teacher_top1" in printed and "agreement" in printed
    rows = [r for r in printed.splitlines() if r.startswith("  ")]  # the metric rows, below the precision and header
    assert len(rows) == 14, printed  # every metric a column apart from its name, agreement_dist included
    assert any(r.split()[0] == "agreement_dist" for r in rows)
    assert all(re.fullmatch(r"  [a-z0-9_]+ {2,}\d\.\d{4}", r) for r in rows), printed

    # The run's training state is not a model checkpoint: the line says so and names the run's weights.
    assert main(["eval", "--checkpoint", str(run / "state.pt"), *data]) == 2
    err = capsys.readouterr().err
    assert "is a training state" in err and str(run / "best.safetensors") in err and "--resume" in err

    assert main(["plot", str(run)]) == 0
    for name in ("loss.png", "lr.png", "top1.png"):
        assert (run / "plots" / name).stat().st_size > 1000


def test_overrides_after_a_flag_are_overrides(capsys):
    """`deit train --config X --dry-run epochs=3`: key=value words after a flag count as overrides."""
    assert main(["train", "--config", "cifar10-deit", "--dry-run", "epochs=3", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "\nepochs: 3\n" in out and "\nseed: 7\n" in out
    assert main(["train", "--config", "cifar10-deit", "--dry-run", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
