"""Where new work enters, used as a user outside the package would: only the public API (``deit``, ``deit.train``,
``deit.data``, ``deit.inference``, the CLI), and a run that trains, evaluates and resumes with what it added: a new
objective, and a new data set (registered by name, or given to ``train`` as objects)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from train_support import signal_when_logged, tiny_overrides

import deit
from deit.cli import main
from deit.data import ImageDataset, build_loader, dataset_names, register_dataset
from deit.inference.evaluation import evaluate
from deit.train import ConfigError, load_config, objective_names, register_objective, train
from deit.train.preemption import Preempted


class SquaredHinge(nn.Module):
    """A user's objective: squared hinge on the true class's margin (accepts class indices or soft targets)."""

    calls = 0

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        SquaredHinge.calls += 1
        if target.ndim == 1:
            target = nn.functional.one_hot(target, self.num_classes).float()
        signs = 2 * target - 1
        return torch.clamp(1 - signs * logits.float(), min=0).pow(2).mean()


@pytest.fixture(scope="module", autouse=True)
def _registered():
    if "squared_hinge" not in objective_names():
        register_objective("squared_hinge", lambda spec: SquaredHinge(spec.num_classes))


def _run(out, *extra):
    return train(load_config("digits-convnet-teacher", tiny_overrides(out, extra=("loss.name=squared_hinge",
                                                                                      *extra))))


def test_a_new_objective_trains_evaluates_and_resumes(tmp_path):
    SquaredHinge.calls = 0
    full = _run(tmp_path / "full", "epochs=2")
    assert SquaredHinge.calls > 0  # the run trained on it (both heads of the distilled student, no teacher)
    assert {"top1", "top1_cls", "top1_dist"} <= set(full.summary["final"])
    # It changes training: the same run on the built-in objective ends elsewhere.
    base = train(load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "ce", extra=("epochs=2",))))
    assert not all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(),
                                                       base.model.state_dict().values(), strict=True))
    # Evaluated from its checkpoint through the public loader: the run's own final figure.
    model = deit.load_checkpoint(full.run_dir / "last.safetensors")
    assert model.num_classes == 4
    # Preempted mid-run (SIGUSR1: it saves and stops), then the same call continues it to the uninterrupted
    # run's weights, bit for bit.
    with pytest.raises(Preempted), signal_when_logged(tmp_path / "resumed", step=15):
        _run(tmp_path / "resumed", "epochs=2")
    resumed = _run(tmp_path / "resumed", "epochs=2")
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_an_unknown_objective_is_refused_naming_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match="cross_entropy.*register_objective"):
        load_config("digits-convnet-teacher", tiny_overrides(tmp_path, extra=("loss.name=focal",)))
    with pytest.raises(ValueError, match="registered already"):
        register_objective("cross_entropy", lambda spec: nn.CrossEntropyLoss())


# ---- a data set of the user's own
class Stripes(ImageDataset):
    """A user's data set, generated on demand: class k is a sine grating at k * 60 degrees; its colour, phase and
    noise are drawn from (seed, index). ``describe`` names the seed, so the fingerprint tells two seeds apart."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        super().__init__(["0 deg", "60 deg", "120 deg"], [i % 3 for i in range(n)])
        self.size, self.seed = size, seed

    def load(self, index: int) -> tuple[Image.Image, int]:
        label = self.targets[index]
        rng = np.random.default_rng([self.seed, index])
        angle = math.pi * label / 3
        y, x = np.mgrid[: self.size, : self.size].astype(np.float32)
        wave = np.sin(0.9 * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
        pixels = (0.5 + 0.4 * wave)[..., None] * rng.uniform(0.4, 1.0, 3) + rng.normal(0, 0.05, (self.size,) * 2 + (3,))
        return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)), label

    def describe(self, index: int) -> str:
        return f"stripes seed {self.seed} #{index}"


def stripes(split: str, size: int = 16, seed: int = 0) -> Stripes:
    return Stripes(96, size, seed) if split == "train" else Stripes(42, size, seed + 100)


@pytest.fixture(scope="module", autouse=True)
def _stripes_registered():
    if "stripes" not in dataset_names():
        register_dataset("stripes", lambda cfg, split: stripes(split, cfg.img_size), description="sine gratings")


def _stripes_config(out, *extra):
    # The tiny config of train_support (synthetic data, 4 classes): the data set here replaces it.
    return load_config("digits-convnet-teacher", tiny_overrides(out, extra=extra))


def _evaluated(model, cfg, val_set) -> float:
    """Top-1 of ``model`` on ``val_set`` through the public loader and evaluation loop."""
    loader = build_loader(cfg.data, "val", preprocessing=model.preprocessing, dataset=val_set, augment=False)
    return evaluate(model.eval(), loader)["top1"]


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_data_set_registered_by_name_trains_evaluates_and_resumes(tmp_path, capsys):
    full = train(_stripes_config(tmp_path / "full", "data.dataset=stripes"))
    assert full.model.num_classes == 3  # the stripes' classes, not the synthetic set's 4
    assert yaml.safe_load((full.run_dir / "config.yaml").read_text())["data"]["dataset"] == "stripes"
    final = full.summary["final"]["top1"]
    assert final == _evaluated(full.model, _stripes_config(tmp_path / "x", "data.dataset=stripes"), stripes("val"))
    # deit eval names it like a built-in data set (registered in this process).
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(full.run_dir / "last.safetensors"), "--data", "stripes",
                 "--set", "img_size=16", "--amp", "none", "--workers", "0", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_samples"] == 42 and metrics["top1"] == final
    # Preempted mid-run, then the same call continues it to the uninterrupted run's weights, bit for bit.
    with pytest.raises(Preempted), signal_when_logged(tmp_path / "resumed", step=15):
        train(_stripes_config(tmp_path / "resumed", "data.dataset=stripes"))
    resumed = train(_stripes_config(tmp_path / "resumed", "data.dataset=stripes"))
    assert _same_weights(full.model, resumed.model)


def test_data_set_objects_given_to_train_train_evaluate_and_resume(tmp_path):
    sets = (stripes("train"), stripes("val"))
    full = train(_stripes_config(tmp_path / "full"), datasets=sets)
    # The config records what the run read: given objects, and their fingerprints (not the synthetic data it named).
    data = yaml.safe_load((full.run_dir / "config.yaml").read_text())["data"]
    assert data["dataset"] == "given" and data["fingerprint"] == f"{sets[0].fingerprint()}/{sets[1].fingerprint()}"
    assert full.model.num_classes == 3
    assert full.summary["final"]["top1"] == _evaluated(full.model, _stripes_config(tmp_path / "x"), sets[1])
    # The same images by name or as objects: the same run.
    by_name = train(_stripes_config(tmp_path / "by-name", "data.dataset=stripes"))
    assert _same_weights(full.model, by_name.model)
    with pytest.raises(Preempted), signal_when_logged(tmp_path / "resumed", step=15):
        train(_stripes_config(tmp_path / "resumed"), datasets=(stripes("train"), stripes("val")))
    # Other data set objects do not continue it, whether the run is continued by default or required to be.
    other = (stripes("train", seed=7), stripes("val"))
    for resume in (False, True):
        with pytest.raises(ConfigError, match="trained on data set objects with fingerprint .*not on the data sets "
                                              "given now"):
            train(_stripes_config(tmp_path / "resumed"), datasets=other, resume=resume)
    resumed = train(_stripes_config(tmp_path / "resumed"), datasets=(stripes("train"), stripes("val")))
    assert _same_weights(full.model, resumed.model)


def test_given_data_sets_are_checked_and_a_config_cannot_rebuild_them(tmp_path):
    with pytest.raises(ValueError, match="name different classes"):
        train(_stripes_config(tmp_path / "a"), datasets=(stripes("train"), deit.data.build_dataset(
            load_config("digits-convnet-teacher", tiny_overrides(tmp_path)).data, "val")))
    with pytest.raises(TypeError, match="the val set is a list, not a deit.data.ImageDataset"):
        train(_stripes_config(tmp_path / "b"), datasets=(stripes("train"), [1, 2]))
    with pytest.raises(TypeError, match=r"datasets must be a pair \(train_set, val_set\).*got tuple of 1"):
        train(_stripes_config(tmp_path / "b"), datasets=(stripes("train"),))
    with pytest.raises(ValueError, match="a config cannot rebuild them: pass them again"):
        train(_stripes_config(tmp_path / "c", "data.dataset=given"))
    with pytest.raises(ValueError, match="dataset must be one of .*stripes.*got 'stripe'.*register_dataset"):
        _stripes_config(tmp_path / "d", "data.dataset=stripe")
    with pytest.raises(ValueError, match="registered already"):
        register_dataset("digits", lambda cfg, split: stripes(split))
