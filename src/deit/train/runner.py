"""The whole ``deit train`` flow: data, student, teacher, loss, optimizer, the epoch loop, run directory, resume.

Python API::

    from deit.train import load_config, train
    cfg = load_config("digits-deit-distilled", ["epochs=5", "teacher.checkpoint=runs/teacher/best.safetensors"])
    result = train(cfg)                      # or train(cfg, teacher=any_module_mapping_images_to_logits)
    result.summary["final"]["top1"]

Under ``torchrun --nproc_per_node N`` every process calls the same function; ranks come from the environment.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from deit.models import Preprocessing, create_model, get_entry
from deit.train.checkpointing import RunDir
from deit.train.config import ConfigError, TrainConfig, dump_config, to_dict
from deit.train.distributed import DistEnv, barrier, cleanup, init_distributed, ranks_identical
from deit.train.ema import ModelEma
from deit.train.engine import NonFiniteLossError, Trainer, TrainView, derive_seed, evaluate
from deit.train.loss import DistillationLoss, freeze_teacher
from deit.train.optim import build_optimizer, build_schedule, scaled_lr


@dataclass
class TrainResult:
    run_dir: Path
    model: nn.Module
    summary: dict


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
        elif Path(mc.finetune).is_file():
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


def build_teacher(cfg: TrainConfig) -> nn.Module:
    """The teacher of ``cfg.teacher``. Release weights are downloaded once (rank 0 of each node; the other
    ranks wait for it) and checked against their hash."""
    tc = cfg.teacher
    if tc.checkpoint:
        from deit.checkpoints import load_checkpoint

        if tc.model is None:
            return load_checkpoint(tc.checkpoint)
        # A foreign layout: the registered architecture says what to build; the class count is the file's.
        return create_model(tc.model, pretrained=tc.checkpoint)
    return create_model(tc.model, pretrained=True)


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


def check_distillation(cfg: TrainConfig, model: nn.Module, teacher: nn.Module | None, num_classes: int,
                       input_size: int, device: torch.device) -> None:
    kind = cfg.distillation.type
    if kind == "none":
        return
    has_token = getattr(model, "distilled", False) and hasattr(model, "forward_heads")
    if cfg.distillation.token == "dist" and not has_token:
        raise ConfigError(
            f"distillation.type={kind!r} needs a student with a distillation token, and {cfg.model.name!r} has "
            "none: use a *_distilled_* model (e.g. model.name=deit_tiny_distilled_patch16_224, or "
            "model.args.distilled=true), set distillation.token=cls (usual distillation into the class token), "
            "or set distillation.type=none"
        )
    if cfg.distillation.token == "cls" and has_token:
        raise ConfigError(
            f"distillation.token=cls distils into the class token of a student without a distillation token, and "
            f"{cfg.model.name!r} has one: set model.args.distilled=false, or distillation.token=dist"
        )
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


def _validates(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether the run validates after (1-based) ``epoch``: every ``eval_every``-th one and always the last."""
    return epoch == epochs or (eval_every > 0 and epoch % eval_every == 0)


# ------------------------------------------------------------------------------------------------------- train
def train(
    cfg: TrainConfig,
    *,
    model: nn.Module | None = None,
    teacher: nn.Module | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train as ``cfg`` says; ``model``/``teacher`` replace the configured ones (any image -> logits module)."""
    cfg.validate()
    env = init_distributed(cfg.device)
    try:
        return _train(cfg, env, model, teacher, resume)
    finally:
        cleanup(env)


def _say(env: DistEnv, *lines: str) -> None:
    if env.is_main:
        for line in lines:
            print(line, flush=True)


def _save_weights(module: nn.Module, path: Path) -> None:
    """Our checkpoint layout (architecture, preprocessing, class names in the header), written atomically; a
    module that is not a deit model (Python API) gets a plain safetensors state dict."""
    from safetensors.torch import save_file

    from deit.checkpoints import save_checkpoint
    from deit.train.checkpointing import atomic_path

    with atomic_path(path) as tmp:
        try:
            save_checkpoint(module, tmp)
        except ValueError:
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))


def _train(cfg: TrainConfig, env: DistEnv, model: nn.Module | None, teacher: nn.Module | None,
           resume: bool) -> TrainResult:
    from deit.data import SoftTargetCrossEntropy, build_dataset, build_loader, build_mixup

    started = time.perf_counter()
    device = env.device
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp=fp16 needs a GPU (it relies on a grad scaler); on CPU use amp=bf16 or amp=none")
    if cfg.teacher.dtype == "float16" and device.type != "cuda" and cfg.distillation.type != "none":
        raise ConfigError("teacher.dtype=float16 needs a GPU; on CPU use bfloat16 or float32")
    run = RunDir(cfg.output_dir or f"runs/{cfg.name}")
    if env.is_main:
        if not resume and run.has_state():
            raise ConfigError(
                f"{run.root} already holds a run: continue it with `deit train --resume {run.root}`, "
                "or choose another output_dir"
            )
        run.create()
    state = run.load_state() if resume and run.has_state() else None

    # -- data
    train_set = build_dataset(cfg.data, "train")
    val_set = build_dataset(cfg.data, "val")
    classes = list(train_set.classes)
    num_classes = len(classes)

    # -- student (same seed on every rank: identical initial weights even before DDP broadcasts them)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    if model is None:
        model = build_student(cfg, num_classes)
    preprocessing = getattr(model, "preprocessing", None)
    if not isinstance(preprocessing, Preprocessing):
        preprocessing = Preprocessing(input_size=cfg.model.img_size or cfg.data.img_size)
    if hasattr(model, "class_names"):
        model.class_names = classes
    model.to(device)

    # -- teacher
    if teacher is None and cfg.distillation.type != "none" and (cfg.teacher.model or cfg.teacher.checkpoint):
        teacher = build_teacher(cfg)
    if teacher is not None:
        teacher = freeze_teacher(teacher.to(device), cfg.teacher.dtype)
    check_distillation(cfg, model, teacher, num_classes, preprocessing.input_size, device)

    # -- loaders, loss
    world = (env.world_size, env.rank)
    train_loader = build_loader(cfg.data, "train", preprocessing=preprocessing, dataset=train_set, seed=cfg.seed,
                                distributed=world)
    val_loader = build_loader(cfg.data, "val", preprocessing=preprocessing, dataset=val_set, seed=cfg.seed,
                              distributed=world)
    num_batches = len(train_loader)  # never 0: build_loader refuses an empty loader, naming the fix
    mixup = build_mixup(cfg.data, num_classes)
    base = SoftTargetCrossEntropy() if mixup is not None else nn.CrossEntropyLoss(label_smoothing=cfg.data.smoothing)
    criterion = DistillationLoss(base, teacher if cfg.distillation.type != "none" else None,
                                 cfg.distillation.type, cfg.distillation.alpha, cfg.distillation.tau,
                                 cfg.distillation.kl_normalisation, token=cfg.distillation.token)

    # -- optimizer, schedule, EMA, scaler
    lr, total_batch = scaled_lr(cfg.optim, cfg.data.batch_size, env.world_size)
    optimizer = build_optimizer(cfg.optim, model, lr)
    steps_per_epoch = math.ceil(num_batches / cfg.optim.accum_steps)
    schedule = build_schedule(cfg.schedule, lr, steps_per_epoch, cfg.epochs)
    ema = ModelEma(model, cfg.ema.decay) if cfg.ema.enabled else None
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    forward_model: nn.Module = TrainView(model)
    if env.distributed:
        forward_model = nn.parallel.DistributedDataParallel(
            forward_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    trainer = Trainer(model=model, forward_model=forward_model, criterion=criterion, optimizer=optimizer,
                      schedule=schedule, env=env, seed=cfg.seed, amp=cfg.amp, accum_steps=cfg.optim.accum_steps,
                      clip_grad=cfg.optim.clip_grad, mixup=mixup, ema=ema, scaler=scaler)
    progress = trainer.progress

    # -- resume
    if state is not None:
        trainer.load_state_dict(state)
        saved_world = state["world_size"]
        if saved_world != env.world_size and progress.batch and env.is_main:
            print(f"warning: the run was saved with {saved_world} process(es) and resumes with {env.world_size}: "
                  "the rest of this epoch's sample order differs from an uninterrupted run", file=sys.stderr)
        if state["ema"] is not None and ema is None and env.is_main:
            print(f"warning: {run.state} holds EMA weights but ema.enabled is off: the EMA stops here",
                  file=sys.stderr)
    if env.is_main and resume:
        # Drop what the interrupted run logged after its last saved state (all of it if it saved none).
        run.truncate_metrics(progress.step if state is not None else -1)
    n_params = sum(p.numel() for p in model.parameters())
    _say(
        env,
        "resolved config:",
        dump_config(cfg).rstrip(),
        f"run dir: {run.root}",
        f"world size {env.world_size} on {device.type}; batch {cfg.data.batch_size} per device, "
        f"{cfg.optim.accum_steps} accumulation step(s), effective batch {total_batch}",
        f"lr {lr:.6g} (base {cfg.optim.lr:g} x {total_batch}/{cfg.optim.lr_base_batch})" if cfg.optim.scale_lr
        else f"lr {lr:.6g} (not scaled by batch)",
        f"student {cfg.model.name}: {n_params:,} parameters, {num_classes} classes, input {preprocessing.input_size}px;"
        f" distillation {cfg.distillation.type}; {len(train_set)} train / {len(val_set)} val images; "
        f"{steps_per_epoch} steps per epoch x {cfg.epochs} epochs",
        *([f"resuming at epoch {progress.epoch}, batch {progress.batch}, step {progress.step}"] if state else []),
    )
    if env.is_main:
        if state is None:
            from deit.train.checkpointing import atomic_write_text

            atomic_write_text(run.config, dump_config(cfg))
        run.log({"kind": "event", "event": "resume" if state else "start", "step": progress.step,
                 "world_size": env.world_size, "lr": lr, "total_batch": total_batch})

    def save(final_epoch_metrics: dict | None = None) -> None:
        if not env.is_main:
            return
        if final_epoch_metrics is not None and final_epoch_metrics["top1"] > progress.best_top1:
            progress.best_top1 = final_epoch_metrics["top1"]
            progress.best_epoch = progress.epoch
            _save_weights(model, run.best)
        _save_weights(model, run.last)
        if ema is not None:
            _save_weights(ema.module, run.ema)
        run.save_state({**trainer.state_dict(), "config": to_dict(cfg)})

    def on_step(tr: Trainer, step_lr: float) -> None:
        s = progress.step
        if cfg.log_every and s % cfg.log_every == 0:
            m = tr.meter
            if env.is_main and m.count:
                run.log({"kind": "step", "epoch": progress.epoch, "step": s, "lr": step_lr,
                         "loss": m.loss_sum / m.count,
                         "img_per_s": m.images / max(time.perf_counter() - m.started, 1e-9)})
            m.reset()
        if cfg.save_every and s % cfg.save_every == 0 and progress.batch < num_batches:
            save()

    teacher_fn = criterion.teacher_logits if criterion.teacher is not None else None
    last_metrics: dict = {}
    try:
        while progress.epoch < cfg.epochs:
            epoch = progress.epoch
            if progress.batch < num_batches:
                train_loader.sampler.set_epoch(epoch, start_batch=progress.batch)
                bar = None
                if env.is_main and cfg.progress:
                    from tqdm import tqdm

                    # disable=None: shown on a terminal, silent when stderr is a file or a pipe.
                    bar = tqdm(total=num_batches, initial=progress.batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                               leave=False, file=sys.stderr, dynamic_ncols=True, disable=None)
                if progress.batch == 0:
                    trainer.meter.reset_epoch()
                trainer.train_one_epoch(train_loader, num_batches, on_step, bar)
                if bar is not None:
                    bar.close()
            metrics: dict = {}
            if _validates(epoch + 1, cfg.epochs, cfg.eval_every):
                metrics = evaluate(model, val_loader, env, teacher_fn, cfg.amp)
                if ema is not None:
                    metrics.update({f"ema_{k}": v for k, v in
                                    evaluate(ema.module, val_loader, env, None, cfg.amp).items() if k != "num_samples"})
            record = {"kind": "epoch", "epoch": epoch + 1, "step": progress.step, "lr": schedule(progress.step),
                      "train_loss": trainer.meter.epoch_loss, "seconds": round(time.perf_counter() - started, 2),
                      **metrics}
            progress.epoch += 1
            progress.batch = 0
            if metrics:
                last_metrics = metrics
            if env.is_main:
                run.log(record)
                if metrics:
                    heads = "".join(f" {k} {metrics[k]:.4f}" for k in ("top1_cls", "top1_dist", "teacher_top1",
                                                                       "agreement") if k in metrics)
                    print(f"epoch {epoch + 1}/{cfg.epochs}: val loss {metrics['loss']:.4f} top1 {metrics['top1']:.4f}"
                          f" top5 {metrics['top5']:.4f}{heads}", flush=True)
                elif record["train_loss"] is not None:
                    print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} (validation every "
                          f"{cfg.eval_every or cfg.epochs} epochs)", flush=True)
            save(metrics or None)
    except NonFiniteLossError as exc:
        if env.is_main:
            run.log({"kind": "event", "event": "non_finite_loss", "step": exc.step, "epoch": exc.epoch,
                     "lr": exc.lr, "loss": str(exc.loss), "loss_scale": exc.loss_scale})
            good = f"{run.last} (last good checkpoint)" if run.last.exists() else "none written yet"
            print(f"error: {exc}\nweights kept: {good}", file=sys.stderr, flush=True)
        raise

    if not last_metrics:  # resumed a finished run: report its final metrics again
        last_metrics = evaluate(model, val_loader, env, teacher_fn, cfg.amp)
    identical = ranks_identical(model, env)
    summary = {
        "name": cfg.name,
        "run_dir": str(run.root),
        "epochs": cfg.epochs,
        "steps": progress.step,
        "world_size": env.world_size,
        "total_batch": total_batch,
        "lr": lr,
        "best_top1": progress.best_top1,
        "best_epoch": progress.best_epoch,
        "final": last_metrics,
        "seconds": round(time.perf_counter() - started, 2),
        "ranks_identical": identical,
    }
    if env.is_main:
        run.write_summary(summary)
        try:
            from deit.train.plots import plot_run

            plot_run(run.root)
        except ImportError as exc:  # matplotlib missing: plots are optional
            print(f"plots skipped: {exc}", file=sys.stderr)
    barrier(env)
    return TrainResult(run.root, model, summary)


__all__ = ["TrainResult", "build_student", "build_teacher", "check_distillation", "train"]
