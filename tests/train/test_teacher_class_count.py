"""A convnet teacher trained on another class count than ImageNet's loads the way `deit train
teacher.checkpoint=...` loads it (``build_teacher`` -> ``load_model``), whatever its family and the layout of its
file: each family's classifier is found through the model contract, not by the ViT's key names."""

from __future__ import annotations

import subprocess

import pytest
import torch
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides

from deit.checkpoints import load_state_dict_strict, save_checkpoint, save_official, save_timm
from deit.models import build_architecture
from deit.train import load_config
from deit.train.teacher_source import build_teacher

NUM_CLASSES = 10
# family -> its smallest registered model (what teacher.model names) and an input size it takes.
FAMILIES = {"regnet": ("regnety_002", 32), "resnet": ("resnet_digits", 32), "resnet9": ("resnet9_small", 32)}
# layout -> how a file of that layout is written. "timm" is also torchvision's layout for the ResNet family (our
# ResNet's keys are torchvision's), and the RegNet release files are "official" ({'model': state_dict}).
LAYOUTS = {
    "deit": lambda model, d: save_checkpoint(model, d / "teacher.safetensors"),
    "official": lambda model, d: save_official(model, d / "teacher.pth"),
    "timm": lambda model, d: save_timm(model, d / "teacher.pth"),
    "timm-safetensors": lambda model, d: save_timm(model, d / "teacher.safetensors"),
}
CASES = [(family, layout) for family in FAMILIES for layout in LAYOUTS]


def _teacher(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_architecture(FAMILIES[family][0], num_classes=NUM_CLASSES).eval()
    with torch.no_grad():  # non-zero everywhere (the zero-initialised BN scales too), so every tensor counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _logits(model: torch.nn.Module, family: str) -> torch.Tensor:
    size = FAMILIES[family][1]
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("family, layout", CASES, ids=[f"{f}-{layout}" for f, layout in CASES])
def test_a_teacher_with_its_own_class_count_loads_in_every_layout(family, layout, tmp_path):
    model = _teacher(family)
    path = LAYOUTS[layout](model, tmp_path)
    name = FAMILIES[family][0]
    # As the DeiT preset names its teacher (teacher.model), and as a file that says its own architecture does.
    for teacher_model in (name, "null") if layout in ("deit", "timm") else (name,):
        cfg = load_config("deit-tiny-distilled_pt-4xb256_in1k",
                          [f"teacher.model={teacher_model}", f"teacher.checkpoint={path}"])
        teacher = build_teacher(cfg)
        assert teacher.num_classes == NUM_CLASSES
        torch.testing.assert_close(_logits(teacher, family), _logits(model, family), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_classifier_that_does_not_fit_is_named_with_the_fix(family):
    """Weights of another class count loaded as they are: the error names the family's classifier and the fix;
    a classifier of another width is another architecture, not a class count."""
    model = build_architecture(FAMILIES[family][0], num_classes=1000)
    weights = _teacher(family).state_dict()
    key = model.classifier_prefixes[0] + "weight"
    with pytest.raises(ValueError, match=rf"shape mismatch for '{key}'.*\(the class count differs: pass num_classes="):
        load_state_dict_strict(model, weights)
    narrower = {**weights, key: weights[key][:, :-1]}
    with pytest.raises(ValueError, match=rf"shape mismatch for '{key}'") as err:
        load_state_dict_strict(build_architecture(FAMILIES[family][0], num_classes=NUM_CLASSES), narrower)
    assert "class count" not in str(err.value)


@pytest.mark.slow
def test_deit_train_distils_from_a_regnet_teacher_with_its_own_class_count(tmp_path):
    """The issue's command, small: a DeiT student, a RegNet teacher of 4 classes in the official layout, named by
    teacher.model as the distilled presets name theirs."""
    torch.manual_seed(0)
    teacher = tmp_path / "regnet_4.pth"
    save_official(build_architecture("regnety_002", num_classes=4), teacher)
    args = tiny_overrides(tmp_path / "run", extra=("epochs=1", "distillation.type=hard", "teacher.model=regnety_002",
                                                   f"teacher.checkpoint={teacher}", "teacher.dtype=float32"))
    done = subprocess.run([*DEIT, "train", "--config", "digits-deit-distilled", *args], cwd=tmp_path, text=True,
                          env={**SUBPROCESS_ENV, "PYTHONPATH": str(REPO / "src")}, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "best.safetensors").is_file()
