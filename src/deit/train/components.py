"""Everything a training run is made of, built from its config: data, student, teacher source, objective (the
three make the run's task), optimizer, schedule, EMA, grad scaler. ``build_components`` is the one place a config
becomes objects; the runner then resumes, fits and reports.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from deit.checkpoints import create_model
from deit.data import ImageDataset, Loader, build_dataset, build_device_augment, build_loader, build_mixup
from deit.data.formats import follow_root
from deit.data.loader import TransformedDataset
from deit.data.transforms import build_transform
from deit.inference.teacher import Teacher
from deit.models import Preprocessing, get_entry, set_attn_impl
from deit.models.contract import data_init_images
from deit.runtime.distributed import DistEnv
from deit.runtime.precision import decide_bf16, precision_line
from deit.train.compiling import compile_problem
from deit.train.config import ConfigError, TrainConfig
from deit.train.ema import Lookahead, ModelEma
from deit.train.engine import Trainer
from deit.train.hooks import say
from deit.train.loss import DistillationObjective
from deit.train.objectives import ObjectiveSpec, build_objective
from deit.train.optim import build_optimizer, build_schedule, scaled_lr
from deit.train.task import TrainTask, derive_seed
from deit.train.teacher_source import build_teacher_source


@dataclass
class RunData:
    train_set: ImageDataset
    val_set: ImageDataset
    train_loader: Loader
    val_loader: Loader

    @property
    def classes(self) -> list[str]:
        return list(self.train_set.classes)

    def close(self) -> None:
        """End both loaders' worker processes."""
        self.train_loader.close()
        self.val_loader.close()


@dataclass
class RunComponents:
    """A run's parts, ready to train: ``trainer`` holds the task (student, teacher source, objective) and the
    optimizer."""

    data: RunData
    model: nn.Module
    preprocessing: Preprocessing
    teacher: Teacher | None
    trainer: Trainer
    lr: float
    total_batch: int
    steps_per_epoch: int
    notes: list[str] = field(default_factory=list)  # lines worth printing at start (the teacher source)


# ------------------------------------------------------------------------------------------------- model set-up
def build_student(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The student from ``cfg.model``: a registered name plus overrides, optionally starting from weights."""
    mc = cfg.model
    entry = get_entry(mc.name)
    names = {f.name for f in dataclasses.fields(entry.config)}
    kwargs = dict(mc.args)
    if "drop_path_rate" in names:
        kwargs["drop_path_rate"] = mc.drop_path
    pretrained: bool | str = False
    if mc.finetune:
        if mc.finetune in ("official", entry.name, *entry.aliases):
            pretrained = True
        elif Path(mc.finetune).exists():  # a file, or a transformers save_pretrained directory
            pretrained = mc.finetune
        else:
            raise ConfigError(
                f"model.finetune={mc.finetune!r} is neither a checkpoint file nor 'official' (the release weights "
                f"of model.name {mc.name!r}); to start from another model's release weights set model.name to it "
                "and model.img_size / the class count will be adapted"
            )
    model = create_model(mc.name, num_classes=num_classes, img_size=mc.img_size, pretrained=pretrained, **kwargs)
    pre = getattr(model, "preprocessing", None)
    if isinstance(pre, Preprocessing) and cfg.model.preprocessing:
        model.preprocessing = replace(pre, **cfg.model.preprocessing)
    return model


def output_classes(module: nn.Module, input_size: int, device: torch.device) -> int:
    """How many classes a module predicts (one forward pass on a dummy image if it does not say)."""
    n = getattr(module, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    was = module.training
    module.eval()
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    with torch.no_grad():
        out = module(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    module.train(was)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return int(out.shape[-1])


def check_distillation(cfg: TrainConfig, teacher: nn.Module | None, num_classes: int, input_size: int,
                       device: torch.device, cached_classes: int | None = None) -> None:
    """The teacher (or its cache) and the data agree on the classes; each mismatch is a ConfigError naming the fix.
    ``cached_classes``: the class count of a teacher-output cache the run reads instead of a teacher. (Whether the
    student fits the distillation setting is the task's check.)"""
    kind = cfg.distillation.type
    if kind == "none":
        return
    if teacher is None and cached_classes is not None:
        if cached_classes != num_classes:
            raise ConfigError(f"the teacher cache holds outputs for {cached_classes} classes but the dataset has "
                              f"{num_classes}: it was built for other data")
        return
    if teacher is None:
        raise ConfigError(
            f"distillation.type={kind!r} needs a teacher: set teacher.checkpoint=PATH (and teacher.model=NAME for a "
            "checkpoint in a foreign layout), or pass teacher=MODULE to deit.train.train"
        )
    t_classes = output_classes(teacher, input_size, device)
    if t_classes != num_classes:
        raise ConfigError(
            f"the teacher predicts {t_classes} classes but the dataset has {num_classes}: a teacher must be trained "
            "on the same classes. Fine-tune the teacher on this dataset first (deit train with a convnet, e.g. "
            "model.name=regnety_008 model.finetune=official), then pass its best.safetensors as teacher.checkpoint"
        )


def resolve_precision(cfg: TrainConfig, device: torch.device) -> tuple[TrainConfig, str]:
    """``cfg`` with ``amp`` and ``teacher.dtype`` "auto" resolved for ``device``, and the line saying so."""
    amp, line = precision_line(cfg.amp, device)
    teacher_dtype, teacher_why = cfg.teacher.dtype, ""
    if teacher_dtype == "auto":
        native, reason = decide_bf16(device)
        teacher_dtype = "bfloat16" if native else "float32"
        teacher_why = f" (teacher.dtype=auto: {reason})" if cfg.amp != "auto" else ""
    resolved = replace(cfg, amp=amp, teacher=replace(cfg.teacher, dtype=teacher_dtype))
    if amp == "fp16":
        line = line.replace("fp16 autocast", "fp16 autocast with a grad scaler", 1)
    if cfg.distillation.type != "none":
        line += f"; teacher in {teacher_dtype}{teacher_why}"
    return resolved, line


def follow_data_root(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """``cfg`` reading ``data.root`` in the format found there, and the line saying which (None without a root)."""
    data, line = follow_root(cfg.data)
    return replace(cfg, data=data), line


def check_runtime(cfg: TrainConfig, device: torch.device) -> None:
    """Settings this machine cannot run (the config itself is valid)."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp=fp16 needs a GPU (it relies on a grad scaler); on CPU use amp=bf16 or amp=none")
    if cfg.teacher.dtype == "float16" and device.type != "cuda" and cfg.distillation.type != "none":
        raise ConfigError("teacher.dtype=float16 needs a GPU; on CPU use bfloat16 or float32")
    problem = compile_problem(device) if cfg.compile else None
    if problem:
        raise ConfigError(f"compile=true: {problem}; or set compile=false")


def build_distillation_objective(cfg: TrainConfig, num_classes: int, soft_targets: bool) -> DistillationObjective:
    """``loss.name``'s base objective with ``distillation``'s teacher term composed on top."""
    base = build_objective(cfg.loss.name, ObjectiveSpec(num_classes, cfg.data.smoothing, soft_targets))
    dc = cfg.distillation
    return DistillationObjective(base, dc.type, dc.alpha, dc.tau, dc.kl_normalisation, token=dc.token)


# ------------------------------------------------------------------------------------------------------- build
def build_data(cfg: TrainConfig, env: DistEnv, preprocessing: Preprocessing,
               sets: tuple[ImageDataset, ImageDataset] | None = None) -> RunData:
    """The train and val data sets (``sets``, if already built) and their loaders for ``preprocessing``."""
    world = (env.world_size, env.rank)
    train_set, val_set = sets or (build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val"))
    train_loader = build_loader(cfg.data, "train", preprocessing=preprocessing, dataset=train_set, seed=cfg.seed,
                                distributed=world)
    val_loader = build_loader(cfg.data, "val", preprocessing=preprocessing, dataset=val_set, seed=cfg.seed,
                              distributed=world)
    return RunData(train_set, val_set, train_loader, val_loader)


def _student(cfg: TrainConfig, num_classes: int, classes: list[str], model: nn.Module | None,
             device: torch.device) -> tuple[nn.Module, Preprocessing]:
    # The same seed on every rank: identical initial weights even before DDP broadcasts them.
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    if model is None:
        model = build_student(cfg, num_classes)
    preprocessing = getattr(model, "preprocessing", None)
    if not isinstance(preprocessing, Preprocessing):
        preprocessing = Preprocessing(input_size=cfg.model.img_size or cfg.data.img_size)
    if hasattr(model, "class_names"):
        model.class_names = classes
    try:
        set_attn_impl(model, cfg.model.attn_impl)
    except ValueError as exc:
        raise ConfigError(f"model.attn_impl: {exc}") from None
    return model.to(device), preprocessing


def data_init_sample(cfg: TrainConfig, train_set: ImageDataset, preprocessing: Preprocessing, count: int
                     ) -> torch.Tensor:
    """``count`` training images (all if fewer) for a data-dependent initialisation, as validation sees them (no
    augmentation), normalised: a seeded choice (``seed``) in data set order, so a class-sorted folder gives every
    class its share and a rerun of the same config picks the same images."""
    n = len(train_set)
    rng = torch.Generator().manual_seed(derive_seed(cfg.seed, "data-init"))
    indices = torch.randperm(n, generator=rng)[: min(count, n)].sort().values.tolist()
    view = TransformedDataset(train_set, build_transform(cfg.data, False, preprocessing))
    return torch.stack([view[i][0] for i in indices])


def initialise_from_data(cfg: TrainConfig, model: nn.Module, train_set: ImageDataset, preprocessing: Preprocessing,
                   device: torch.device) -> str | None:
    """The student's weights that are computed from training data (``Classifier.init_from_data``: airbench's
    whitening), before step 0 and before the EMA or Lookahead copy the weights; the line saying so (None: the
    model wants none). A fine-tuned student keeps the weights it starts from."""
    count = data_init_images(model)
    if not count or cfg.model.finetune:
        return None
    images = data_init_sample(cfg, train_set, preprocessing, count)
    model.init_from_data(images.to(device))
    return f"data-dependent initialisation ({type(model).__name__}.init_from_data) from {len(images)} training images"


def build_components(cfg: TrainConfig, env: DistEnv, model: nn.Module | None = None,
                     teacher: nn.Module | None = None,
                     datasets: tuple[ImageDataset, ImageDataset] | None = None,
                     init_from_data: bool = True) -> RunComponents:
    """Data (``datasets``: the (train, val) sets, else those ``cfg.data`` names), student (``model`` replaces the
    configured one), teacher (``teacher`` likewise: any images -> logits module), loss, optimizer, schedule, EMA,
    Lookahead and grad scaler of ``cfg``, on ``env``'s device. ``init_from_data``: compute the student's
    data-dependent weights (a fresh run; a continued one loads them with its state)."""
    device = env.device
    # The data sets first (a bad split fails before any model is built): the class count sizes the student's head;
    # the loaders need the student's preprocessing.
    train_set, val_set = datasets or (build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val"))
    classes = list(train_set.classes)
    model, preprocessing = _student(cfg, len(classes), classes, model, device)
    data_init = initialise_from_data(cfg, model, train_set, preprocessing, device) if init_from_data else None
    mixup = build_mixup(cfg.data, len(classes))
    objective = build_distillation_objective(cfg, len(classes), soft_targets=mixup is not None)
    # The task checks that the distillation setting fits the student before any teacher is loaded.
    task = TrainTask(model, objective, mixup=mixup, augment=build_device_augment(cfg.data, preprocessing),
                     seed=cfg.seed, env=env, amp=cfg.amp, student_name=repr(cfg.model.name), compile=cfg.compile,
                     report=say if env.is_main else None)
    data = build_data(cfg, env, preprocessing, (train_set, val_set))
    source, live, notes = build_teacher_source(cfg, env, preprocessing, data, teacher)
    notes += [data_init] if data_init else []
    if task.augment is not None and device.type == "cpu":
        notes.append("data.device_augment on a CPU: the recipe's resize and augmentations run in the training process, "
                     "batched for a GPU and slower here than in loader workers (set data.device_augment=false)")
    if objective.distilling:
        check_distillation(cfg, live.module if live else None, len(classes), preprocessing.input_size, device,
                           cached_classes=getattr(getattr(source, "meta", None), "num_classes", None))
        task.set_teacher(source)
    lr, total_batch = scaled_lr(cfg.optim, cfg.data.batch_size, env.world_size)
    steps_per_epoch = math.ceil(len(data.train_loader) / cfg.optim.accum_steps)
    trainer = Trainer(
        task=task, optimizer=build_optimizer(cfg.optim, model, lr),
        schedule=build_schedule(cfg.schedule, lr, steps_per_epoch, cfg.total_steps(steps_per_epoch)), env=env,
        accum_steps=cfg.optim.accum_steps, clip_grad=cfg.optim.clip_grad,
        ema=ModelEma(model, cfg.ema.decay) if cfg.ema.enabled else None,
        lookahead=Lookahead(model, cfg.lookahead.every, cfg.lookahead.decay) if cfg.lookahead.enabled else None,
        tta=cfg.eval.tta,
        scaler=torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None,
    )
    return RunComponents(data, model, preprocessing, live, trainer, lr, total_batch, steps_per_epoch, notes)


__all__ = [
    "RunComponents",
    "RunData",
    "build_components",
    "build_data",
    "build_distillation_objective",
    "build_student",
    "check_distillation",
    "check_runtime",
    "data_init_sample",
    "follow_data_root",
    "initialise_from_data",
    "resolve_precision",
    "output_classes",
]
