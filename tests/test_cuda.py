"""What only a CUDA device can check (skipped without one; benchmarks/gpu_check.sh runs them on a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "train"))
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from train_support import tiny_overrides  # noqa: E402

from deit.benchmark import BenchmarkConfig, run_benchmark  # noqa: E402
from deit.checkpoints import save_checkpoint  # noqa: E402
from deit.data import DataConfig, build_device_augment  # noqa: E402
from deit.data.device_augment import DeviceAugmentWorker  # noqa: E402
from deit.inference.teacher import Teacher  # noqa: E402
from deit.models import Preprocessing, build_architecture  # noqa: E402
from deit.runtime.precision import resolve_amp  # noqa: E402
from deit.train import load_config, train  # noqa: E402
from deit.train.cache_build import BuildOptions, build_cache  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
GPU = torch.device("cuda")


def _cfg(out: Path, *extra: str):
    return load_config("digits-convnet-teacher", tiny_overrides(out, extra=("device=cuda", *extra)))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_on_the_gpu(tmp_path, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = train(_cfg(tmp_path / amp, f"amp={amp}", "ema.enabled=true", "epochs=2", "save_every=3"))
    final = result.summary["final"]
    assert 0.0 <= final["top1"] <= 1.0 and final["loss"] == final["loss"]
    state = torch.load(tmp_path / amp / "state.pt", weights_only=False)
    assert (state["scaler"] is not None) == (amp == "fp16")  # fp16 keeps a grad scaler, and saves it
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_auto_picks_bf16_on_a_gpu_that_has_it(monkeypatch):
    monkeypatch.delenv("DEIT_ASSUME_BF16", raising=False)  # the hardware decides here, not the variable
    want = "bf16" if torch.cuda.is_bf16_supported() else "none"
    assert resolve_amp("auto", GPU)[0] == want
    monkeypatch.setenv("DEIT_ASSUME_BF16", "0")
    assert resolve_amp("auto", GPU) == ("none", "DEIT_ASSUME_BF16=0 says this GPU does not compute bf16 natively")


def test_a_bf16_channels_last_teacher_agrees_with_fp32():
    torch.manual_seed(0)
    module = build_architecture("regnety_002", num_classes=10).eval()
    x = torch.randn(16, 3, 224, 224)
    with torch.no_grad():
        reference = module(x).argmax(1)
    fast = Teacher(module.to(GPU), "bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert fast.channels_last
    agree = (fast(x.to(GPU)).argmax(1).cpu() == reference).float().mean()
    assert agree >= 0.8  # random weights: logits close together, so a few flips are expected


def test_teacher_cache_built_on_the_gpu_is_read_by_a_gpu_run(tmp_path):
    torch.manual_seed(1)
    teacher = tmp_path / "teacher.safetensors"
    save_checkpoint(build_architecture("resnet_digits", num_classes=4, img_size=16), teacher)
    distil = ("distillation.type=hard", f"teacher.checkpoint={teacher}", "teacher.dtype=float32")
    build_cache(_cfg(tmp_path / "u", *distil), tmp_path / "cache", BuildOptions(progress=False))
    cached = train(_cfg(tmp_path / "cached", *distil, f"distillation.teacher_cache={tmp_path / 'cache'}"))
    live = train(_cfg(tmp_path / "live", *distil))
    assert abs(cached.summary["final"]["top1"] - live.summary["final"]["top1"]) <= 0.1


def test_benchmark_on_the_gpu_reports_mfu():
    config = BenchmarkConfig(models=("deit_tiny_patch16_224",), train_models=("deit_tiny_distilled_patch16_224",),
                             batch_sizes=(8,), train_batch_size=8, repeats=2, train_repeats=1, device="cuda",
                             dtype="bf16" if torch.cuda.is_bf16_supported() else "fp32", peer=False,
                             tasks=("gemm", "inference", "train", "train+cache"), model_overrides={"depth": 2})
    _, rows = run_benchmark(config)
    model_rows = [r for r in rows if r.task != "gemm"]
    assert model_rows and all(r.ours_img_s and r.ours_img_s > 0 for r in model_rows)
    if any(name in torch.cuda.get_device_name() for name in ("H100", "H200", "A100")):
        assert all(r.ours_mfu_pct is not None and r.ours_mfu_pct > 0 for r in model_rows)


def test_the_device_stage_on_the_gpu_makes_the_cpu_s_batch_and_trains_the_worker_path_s_run(tmp_path):
    # Every RandAugment op, three erasing boxes, crops of every size: the same bytes on both devices.
    cfg = DataConfig(device_augment=True, auto_augment="rand-m9-mstd0.5-inc1-p1.0-n3", reprob=1.0, recount=3)
    pre, rng = Preprocessing(input_size=64), np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8))
              for h, w in rng.integers(40, 200, (64, 2))]
    worker, stage = DeviceAugmentWorker.build(cfg, pre), build_device_augment(cfg, pre)
    batch = worker.collate([worker(img, np.random.default_rng([0, 0, i])) for i, img in enumerate(photos)])
    on_cpu, on_gpu = stage(batch), stage(batch.pin_memory().to(GPU, non_blocking=True)).cpu()
    assert torch.equal(on_cpu, on_gpu), f"{(on_cpu != on_gpu).sum()} values differ"
    runs = {}
    for name, extra in (("worker", ()), ("device", ("data.device_augment=true",)),
                        ("again", ("data.device_augment=true",))):
        result = train(_cfg(tmp_path / name, "data.auto_augment=rand-m9-mstd0.5-inc1", *extra))
        runs[name] = load_file(str(result.run_dir / "last.safetensors"))
    for key, value in runs["device"].items():
        assert torch.equal(value, runs["again"][key]), f"device_augment is not reproducible on the GPU: {key}"
        assert torch.equal(value, runs["worker"][key]), f"device_augment trains another run on the GPU: {key}"


def test_the_simple_crop_resized_on_the_gpu_is_the_cpu_s():
    # DeiT III's simple crop: the strips of photos of every shape (upscaled, tall, wide, both pass orders).
    cfg = DataConfig(device_augment=True, three_augment=True, color_jitter=0.3, auto_augment=None, reprob=0.0,
                     train_crop="simple")
    pre, rng = Preprocessing(input_size=64), np.random.default_rng(1)
    photos = [Image.fromarray(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8))
              for h, w in [*rng.integers(30, 300, (62, 2)), (600, 70), (70, 600)]]
    worker, stage = DeviceAugmentWorker.build(cfg, pre), build_device_augment(cfg, pre)
    batch = worker.collate([worker(img, np.random.default_rng([0, 0, i])) for i, img in enumerate(photos)])
    on_cpu, on_gpu = stage(batch), stage(batch.pin_memory().to(GPU, non_blocking=True)).cpu()
    assert torch.equal(on_cpu, on_gpu), f"{(on_cpu != on_gpu).sum()} values differ"


def test_lamb_on_the_gpu_matches_the_cpu():
    from deit.train.optim import Lamb

    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(64, 48, generator=g), torch.zeros(16, 8), torch.randn(48, generator=g)]
    steps = [[torch.randn(w.shape, generator=g) * s for w in weights] for s in (20.0, 0.01, 3.0)]
    results = []
    for device in ("cpu", "cuda"):
        params = [torch.nn.Parameter(w.clone().to(device)) for w in weights]
        opt = Lamb([{"params": params[:2], "weight_decay": 0.05}, {"params": params[2:], "weight_decay": 0.0}],
                   lr=0.01, eps=1e-8)
        for grads in steps:  # the first and last steps clip at the global norm 1.0
            for p, grad in zip(params, grads, strict=True):
                p.grad = grad.to(device)
            opt.step()
        results.append([p.detach().cpu() for p in params])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(*results, strict=True))


def test_the_deit3_recipe_trains_on_the_gpu_with_a_grad_scaler(tmp_path):
    recipe = ("optim.name=lamb", "loss.name=bce", "data.three_augment=true", "data.color_jitter=0.3",
              "data.train_crop=simple", "data.reprob=0", "data.smoothing=0", "amp=fp16")
    result = train(_cfg(tmp_path / "r", *recipe))
    final = result.summary["final"]
    assert 0.0 <= final["top1"] <= 1.0 and final["loss"] == final["loss"]
