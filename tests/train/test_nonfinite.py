"""A non-finite loss stops training with the step, lr and loss scale, keeping the last good checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from train_support import tiny_overrides

from deit.train.engine import NonFiniteLossError
from deit.train.presets import load_config
from deit.train.runner import train


class ExplodesAfter(nn.Module):
    """A linear classifier whose training forward returns NaN from its n-th call on."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 4)
        self.n, self.calls = n, 0

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                return out * float("nan")
        return out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config("digits-convnet-teacher", tiny_overrides(out, distilled=False, extra=(
        "save_every=2", "data.mixup=0", "data.cutmix=0")))
    model = ExplodesAfter(6)  # forwards 1-5 fine: optimizer steps 0..4 complete; step 5 explodes
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, model=model)
    exc = info.value
    assert exc.step == 5 and exc.epoch == 0
    assert exc.lr == pytest.approx(train_lr_at(cfg, 5))
    assert "non-finite loss" in str(exc) and "step 5" in str(exc) and "lr" in str(exc)
    err = capsys.readouterr().err
    assert "last good checkpoint" in err
    # The last save was at step 4; its weights are finite and are those of the state file.
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["progress"]["step"] == 4
    last = load_file(str(out / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in last.values())
    assert torch.equal(last["fc.weight"], state["model"]["fc.weight"])
    events = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    bad = [e for e in events if e.get("event") == "non_finite_loss"]
    assert bad and bad[0]["step"] == 5 and bad[0]["loss_scale"] is None


def train_lr_at(cfg, step: int) -> float:
    from deit.train.optim import build_schedule

    steps_per_epoch = cfg.data.synthetic_train // cfg.data.batch_size  # repeated aug keeps ~N samples
    return build_schedule(cfg.schedule, cfg.optim.lr, steps_per_epoch, cfg.total_steps(steps_per_epoch))(step)


def test_cli_exit_code_on_divergence(tmp_path, capsys):
    from deit.cli import main

    out = tmp_path / "run"
    code = main(["train", "--config", "digits-convnet-teacher",
                 *tiny_overrides(out, extra=("optim.lr=1e30", "schedule.name=constant", "schedule.warmup_epochs=0"))])
    assert code == 3
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "optimizer step 1" in err and "lr 1e+30" in err


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    from deit.cli import main

    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on GPU")
    cfg = load_config("digits-convnet-teacher", tiny_overrides(tmp_path / "r", extra=("amp=fp16",)))
    with pytest.raises(ValueError, match="amp=fp16 needs a GPU"):
        train(cfg)
    assert main(["train", "--config", "digits-convnet-teacher",
                 *tiny_overrides(tmp_path / "r2", extra=("amp=fp16",))]) == 2
