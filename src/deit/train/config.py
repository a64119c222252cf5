"""The training configuration: a tree of typed dataclasses, with the paper's defaults and every check that needs
neither a model nor data (those come at the start of training).

Fields with a fixed set of values are ``Literal`` types: the set is written once, here, and every reader (the
YAML loader, :meth:`TrainConfig.validate`, the loss, the command line) takes it from the type. Configs are read
from presets and YAML files by ``deit.train.presets``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deit.data.config import DataConfig
from deit.inference.evaluation import TtaMode
from deit.models.attention import AttnImpl
from deit.runtime.precision import AmpMode
from deit.runtime.typedconfig import ConfigError, coerce, setting, to_dict, unknown_key
from deit.train.objectives import check_objective

DistillationType = Literal["none", "soft", "hard"]
DistillationToken = Literal["dist", "cls"]
KlNormalisation = Literal["batchmean", "batch_classes"]
OptimizerName = Literal["adamw", "lamb", "sgd"]
ScheduleName = Literal["cosine", "constant"]
TeacherDtype = Literal["auto", "float32", "bfloat16", "float16"]
ResumeMode = Literal["auto", "never"]
DISTILLATION_TYPES: tuple[str, ...] = typing.get_args(DistillationType)
DISTILLATION_TOKENS: tuple[str, ...] = typing.get_args(DistillationToken)
KL_NORMALISATIONS: tuple[str, ...] = typing.get_args(KlNormalisation)


@dataclass
class ModelConfig:
    name: str = "deit_tiny_distilled_patch16_224"
    # Input resolution; None: the model's own (or the data's, for convnets).
    img_size: int | None = None
    drop_path: float = 0.1
    # Start from these weights (fine-tuning): a checkpoint path in any layout deit reads, or a registered model
    # name whose official weights are used. Heads are re-initialised for another class count and pos_embed is
    # resampled for another resolution. Distillation is allowed while fine-tuning.
    finetune: str | None = None
    # Any other field of the model's architecture config (e.g. embed_dim, depth, num_heads, patch_size).
    args: dict[str, Any] = field(default_factory=dict)
    # Overrides of the model's preprocessing, stored in its checkpoints (crop_pct, mean, std, interpolation).
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # Which kernel computes attention (a runtime setting: weights and checkpoints are the same): auto (the faster of
    # sdpa and matmul + softmax, measured once per process for each shape, dtype and device: deit.models.attention),
    # sdpa or math. A continuation may change it: the two agree to rounding.
    attn_impl: AttnImpl = setting("auto", resumable=True)


@dataclass
class TeacherConfig:
    # A registered model name (e.g. regnety_160, resnet_digits); with checkpoint null and model set, the
    # official weights of that model are used (downloaded once, on rank 0).
    model: str | None = None
    # Weights: a checkpoint path in any layout deit reads (our safetensors, official, timm, ...). With model null,
    # it must be one of our checkpoints (they carry their architecture).
    checkpoint: str | None = None
    # The teacher's own dtype: auto (bfloat16 where the hardware computes it natively, like amp: auto; else
    # float32), float32, bfloat16 or float16 (float16 only on GPU).
    dtype: TeacherDtype = "auto"


@dataclass
class DistillationConfig:
    type: DistillationType = "none"
    alpha: float = 0.5  # weight of the distillation term: (1 - alpha) * base + alpha * distillation
    tau: float = 1.0  # soft distillation temperature
    # Soft distillation: KL(teacher || student) at temperature tau, times tau^2, summed over classes and
    # "batchmean": averaged over the batch (Hinton's form, the default), or
    # "batch_classes": divided by batch x classes (the reference DeiT code; 1/classes of the former).
    kl_normalisation: KlNormalisation = "batchmean"
    # Which output gets the teacher term: "dist", the distillation token's head (a model with one), or "cls", the
    # class token of a model without one ("usual distillation": both terms on the single output).
    token: DistillationToken = "dist"
    # A teacher-output cache directory (deit teacher-cache build): read instead of running the teacher; a
    # directory that does not exist yet is filled on the fly by this run, for later runs of the same data stream.
    teacher_cache: str | None = None


@dataclass
class LossConfig:
    # The base objective, by name from deit.train.objectives' registry (cross_entropy: hard labels with
    # data.smoothing, or mixup's soft targets; bce: DeiT III's binary cross-entropy, mixup's targets binarised,
    # data.smoothing 0); the distillation term composes on top of it.
    name: str = "cross_entropy"


@dataclass
class OptimConfig:
    # adamw; lamb: DeiT III's (deit.train.optim.Lamb: apex FusedLAMB's rule, its global gradient clipping at norm
    # 1.0 built in, no trust ratio where there is no weight decay); sgd.
    name: OptimizerName = "adamw"
    lr: float = 5e-4  # base lr, for a total batch of lr_base_batch when scale_lr is on
    # lr = lr * total_batch / lr_base_batch, total_batch = data.batch_size x world size x accum_steps
    scale_lr: bool = True
    lr_base_batch: int = 512
    weight_decay: float = 0.05  # never applied to biases, norms, pos_embed, cls/dist tokens
    # The lr of those exempt parameters, as a multiple of the schedule's (airbench trains its BatchNorm biases at
    # 64x: its norms have no trained scale).
    no_decay_lr_scale: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    clip_grad: float | None = None  # max global gradient norm; null: no clipping
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimizer step


@dataclass
class ScheduleConfig:
    name: ScheduleName = "cosine"
    warmup_epochs: float = 5.0  # linear warmup from warmup_lr, stepped per iteration
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5  # cosine floor


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.99996


@dataclass
class LookaheadConfig:
    # airbench's Lookahead: every ``every`` optimizer steps the slow weights move toward the trained ones,
    # slow += (1 - d) (trained - slow), and training continues from the slow weights; d = decay x (step /
    # total steps)^3 grows from 0 (early steps are kept whole) to ``decay``. The last step of the schedule sets the
    # trained weights to the slow ones, so the run's weights are the slow weights. BatchNorm statistics too.
    enabled: bool = False
    every: int = 5
    decay: float = 0.95 ** 5


@dataclass
class EvalConfig:
    # Validation's test-time augmentation (every validation of the run, the EMA's too): none, flip or multicrop
    # (6 forward passes an image: budget it with eval_every).
    tta: TtaMode = setting("none", resumable=True)


@dataclass
class LoggingConfig:
    # TensorBoard event files beside metrics.jsonl: "auto" when the tensorboard package is installed
    # (pip install deit[tensorboard]), true (an error without it) or false.
    tensorboard: bool | Literal["auto"] = "auto"


@dataclass
class BudgetPlan:
    """What ``budget_minutes`` planned for a run, measured on its own steps before it trained (deit.train.budget).
    Written by the run into its config.yaml; its continuation keeps it instead of planning again. The run's
    ``epochs`` and ``schedule.warmup_epochs`` are the planned values; the requested ones are kept here."""

    budget_minutes: float = 0.0  # the budget this plan was made for
    requested_epochs: int = 1  # the config's epochs: the cap of the plan
    requested_warmup_epochs: float = 0.0  # the config's schedule.warmup_epochs
    steps_per_epoch: int = 1
    # The optimizer steps planned, the last epoch cut short where the budget ends inside it (0: whole epochs, as
    # plans made before partial epochs).
    steps: int = 0
    step_seconds: float = 0.0  # one optimizer step: data loading, the teacher or its cache, the optimizer
    images_per_s: float = 0.0
    calibration_steps: int = 0  # optimizer steps timed (then undone: the run starts from the same state)
    calibration_seconds: float = 0.0  # the steps, one (partial) validation and one save
    validation_seconds: float = 0.0  # one validation of the whole val set (0: the run never validates)
    validations: int = 0
    save_seconds: float = 0.0  # one save of the weights and the training state
    saves: int = 0
    finish_seconds: float = 0.0  # after the last epoch: the plots
    startup_seconds: float = 0.0  # the process before the first epoch: imports, start-up, calibration
    predicted_minutes: float = 0.0  # the whole run
    expected_end: str = ""  # local time, as planned
    note: str = ""


@dataclass
class TrainConfig:
    # Fields marked resumable=True may change between a run and its continuation (they change nothing computed);
    # every other difference makes `resume: auto` refuse the run dir (deit.train.resume).
    name: str = "custom"
    epochs: int = 300
    # Train within this many minutes of wall time (deit train --budget-minutes N), everything included: before it
    # trains, the run times a few of its own steps, a validation and a save, and plans the most optimizer steps up
    # to ``epochs`` epochs (the cap; the last epoch may be cut short) that end within the budget; warm-up shrinks
    # with the schedule. The plan is written to the run's config.yaml (``budget_plan``, with the planned epochs
    # and steps), and a resumed run keeps it.
    budget_minutes: float | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast where the hardware computes bf16 natively (CUDA GPUs that support it, CPUs with
    # AVX512_BF16 or AMX), none (fp32) elsewhere; the run's config.yaml records the mode chosen. bf16 (CPU and
    # GPU) | fp16 (GPU only, with a grad scaler) | none.
    amp: AmpMode = "auto"
    output_dir: str | None = setting(None, resumable=True)  # default: runs/<name>
    # An output_dir that already holds a run: "auto" continues it when it was made with the same config (a
    # restart with the unchanged command line) and refuses another config, naming the differing keys; "never"
    # (deit train --fresh) moves the old run aside and starts over.
    resume: ResumeMode = setting("auto", resumable=True)
    log_every: int = setting(50, resumable=True)  # a metrics line every N optimizer steps (0: per epoch only)
    save_every: int = setting(0, resumable=True)  # training state every N optimizer steps (0: at each epoch end only)
    # ... and at the first step boundary after this many minutes since the last save (0: off), so a long epoch
    # is never lost whole.
    save_every_minutes: float = setting(30.0, resumable=True)
    # Validate after every N-th epoch and always after the last one (0: after the last one only; -1: never, for
    # callers that evaluate the weights themselves, e.g. `deit reproduce`: the summary's final metrics are then
    # empty and no best.safetensors is written). On a small training set validation can cost as much as the epoch
    # itself; best.safetensors only sees validated epochs.
    eval_every: int = 1
    progress: bool = setting(True, resumable=True)  # tqdm progress bar on rank 0
    # torch intra-op threads per process; null: torch's default (torchrun sets OMP_NUM_THREADS=1 per process).
    # On a CPU shared with other busy processes, 1 is often faster than several spinning threads.
    threads: int | None = setting(None, resumable=True)
    # torch.compile the training step (forward, objective, backward; deit.train.compiling): the first steps print
    # the compile time and the speed-up over eager. Same maths, eager's random numbers: a continuation may change it.
    compile: bool = setting(False, resumable=True)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = setting(default_factory=LoggingConfig, resumable=True)
    # Written by the run when budget_minutes planned it (see BudgetPlan); null until then.
    budget_plan: BudgetPlan | None = None

    def total_steps(self, steps_per_epoch: int) -> int:
        """The optimizer steps the run trains: ``epochs`` of ``steps_per_epoch``, or its budget plan's steps when
        the plan ends inside the last of those epochs (a continuation given more epochs trains them whole)."""
        plan, whole = self.budget_plan, self.epochs * steps_per_epoch
        if plan is not None and plan.steps and self.epochs == math.ceil(plan.steps / steps_per_epoch):
            return plan.steps
        return whole

    def validate(self) -> TrainConfig:
        """Value checks that need no model or data (those come at the start of training)."""
        check_choices(self)
        for key, value, low in [
            ("epochs", self.epochs, 1),
            ("optim.accum_steps", self.optim.accum_steps, 1),
            ("optim.lr_base_batch", self.optim.lr_base_batch, 1),
            ("log_every", self.log_every, 0),
            ("save_every", self.save_every, 0),
            ("eval_every", self.eval_every, -1),
            ("threads", self.threads if self.threads is not None else 1, 1),
            ("lookahead.every", self.lookahead.every, 1),
        ]:
            if value < low:
                raise ConfigError(f"{key} must be >= {low}, got {value}")
        self._validate_budget()
        if self.save_every_minutes < 0:
            raise ConfigError(f"save_every_minutes must be >= 0 (0: off), got {self.save_every_minutes}")
        if not 0.0 <= self.distillation.alpha <= 1.0:
            raise ConfigError(f"distillation.alpha must be in [0, 1], got {self.distillation.alpha}")
        if self.distillation.tau <= 0:
            raise ConfigError(f"distillation.tau must be > 0, got {self.distillation.tau}")
        if not 0.0 <= self.ema.decay < 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1), got {self.ema.decay}")
        if self.optim.no_decay_lr_scale <= 0:
            raise ConfigError(f"optim.no_decay_lr_scale must be > 0, got {self.optim.no_decay_lr_scale}")
        if not 0.0 <= self.lookahead.decay < 1.0:
            raise ConfigError(f"lookahead.decay must be in [0, 1), got {self.lookahead.decay}")
        try:
            check_objective(self.loss.name, self.data.smoothing)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas needs two values, got {self.optim.betas}")
        self._validate_model()
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")
        return self

    def _validate_budget(self) -> None:
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            raise ConfigError(f"budget_minutes must be > 0 (or null: train for `epochs`), got {self.budget_minutes}")
        plan = self.budget_plan
        if plan is not None and plan.budget_minutes != self.budget_minutes:
            raise ConfigError(
                f"this run was planned for budget_minutes={plan.budget_minutes:g} (its budget_plan) and keeps that "
                f"plan: leave budget_minutes at {plan.budget_minutes:g}; to train longer give epochs=N, or start "
                "over with --fresh")

    def _validate_model(self) -> None:
        from deit.models import Preprocessing, get_entry

        try:
            entry = get_entry(self.model.name)
        except ValueError as exc:
            raise ConfigError(f"model.name: {exc}") from None
        valid = [f.name for f in dataclasses.fields(entry.config)]
        hints = typing.get_type_hints(type(entry.config))
        for key, value in self.model.args.items():
            if key not in valid:
                raise unknown_key(key, "model.args.", valid)
            if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string: read it as the field's type
                self.model.args[key] = coerce(value, hints[key], f"model.args.{key}")
            dedicated = {"img_size": "model.img_size", "drop_path_rate": "model.drop_path",
                         "num_classes": "nothing (the class count comes from the data)"}
            if key in dedicated:
                raise ConfigError(f"model.args.{key}: set {dedicated[key]} instead")
        valid_pre = [f.name for f in dataclasses.fields(Preprocessing)]
        for key in self.model.preprocessing:
            if key not in valid_pre:
                raise unknown_key(key, "model.preprocessing.", valid_pre)
        if self.teacher.model is not None:
            try:
                get_entry(self.teacher.model)
            except ValueError as exc:
                raise ConfigError(f"teacher.model: {exc}") from None

    def to_dict(self) -> dict:
        return to_dict(self)


def default_output_dir(cfg: TrainConfig) -> Path:
    """Where a run writes: ``output_dir``, else ``runs/<name>``."""
    return Path(cfg.output_dir or f"runs/{cfg.name}")


def _allowed(value: Any, tp: Any) -> tuple[bool, tuple]:
    """(whether ``value`` fits a Literal field or a union with a Literal arm, the literal choices)."""
    arms = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    choices = tuple(c for arm in arms if typing.get_origin(arm) is Literal for c in typing.get_args(arm))
    others = tuple(arm for arm in arms if typing.get_origin(arm) is not Literal and isinstance(arm, type))
    return value in choices or isinstance(value, others), choices


def check_choices(obj: Any, prefix: str = "") -> None:
    """Every ``Literal`` field of a config tree holds one of its values (configs built in Python skip the loader)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints[f.name]
        ok, choices = _allowed(value, tp)
        if choices and not ok:
            raise ConfigError(f"{prefix}{f.name}={value!r} is not one of {', '.join(map(str, choices))}")
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")


__all__ = [
    "DISTILLATION_TOKENS",
    "DISTILLATION_TYPES",
    "KL_NORMALISATIONS",
    "BudgetPlan",
    "ConfigError",
    "DistillationConfig",
    "EmaConfig",
    "EvalConfig",
    "LookaheadConfig",
    "LoggingConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TeacherConfig",
    "TrainConfig",
    "check_choices",
    "default_output_dir",
]
