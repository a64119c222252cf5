import pytest
import torch

from deit.data import DataConfig, DataError, build_dataset, build_loader


def _cfg(**kw):
    base = dict(dataset="synthetic", img_size=40, synthetic_classes=4, synthetic_train=48, synthetic_val=10,
                batch_size=8, num_workers=0, persistent_workers=False)
    return DataConfig(**{**base, **kw})


def _batches(loader, epoch, start_batch=0, n=None):
    loader.sampler.set_epoch(epoch, start_batch=start_batch)
    out = []
    for x, y in loader:
        out.append((x, y))
        if n is not None and len(out) == n:
            break
    return out


def test_same_seed_same_batches_with_zero_or_two_workers(pp32):
    a = _batches(build_loader(_cfg(), "train", preprocessing=pp32, seed=5), epoch=2)
    b = _batches(build_loader(_cfg(num_workers=2), "train", preprocessing=pp32, seed=5), epoch=2)
    assert len(a) == len(b) == 6  # 48 samples, repeated augmentation keeps the epoch at ~N
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = _batches(build_loader(_cfg(), "train", preprocessing=pp32, seed=6), epoch=2, n=1)
    assert not torch.equal(a[0][0], c[0][0])  # the seed matters
    d = _batches(build_loader(_cfg(), "train", preprocessing=pp32, seed=5), epoch=3, n=1)
    assert not torch.equal(a[0][0], d[0][0])  # so does the epoch
    # the three repeats of an image are augmented differently
    assert a[0][1][0] == a[0][1][1] and not torch.equal(a[0][0][0], a[0][0][1])


def test_resume_mid_epoch_reproduces_the_remaining_batches(pp32):
    loader = build_loader(_cfg(num_workers=2, persistent_workers=True), "train", preprocessing=pp32, seed=1)
    full = _batches(loader, epoch=4)
    resumed = _batches(build_loader(_cfg(), "train", preprocessing=pp32, seed=1), epoch=4, start_batch=4)
    assert len(resumed) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(_batches(loader, epoch=5)) == len(full)  # the next epoch starts at batch 0 again


def test_val_loader_in_order_every_sample_once_over_ranks(pp32):
    cfg = _cfg(batch_size=4)
    seen = []
    for rank in range(2):
        loader = build_loader(cfg, "val", preprocessing=pp32, distributed=(2, rank))
        for x, y in _batches(loader, epoch=0):
            assert x.shape[1:] == (3, 32, 32)
            seen.extend(y.tolist())
    assert sorted(seen) == sorted(build_dataset(cfg, "val").targets) and len(seen) == 10


def test_distributed_train_shards_and_classes(pp32):
    loaders = [build_loader(_cfg(), "train", preprocessing=pp32, distributed=(2, r)) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) == 3
    assert loaders[0].dataset.classes == [f"class_{i}" for i in range(4)]
    assert not torch.equal(_batches(loaders[0], 0)[0][0], _batches(loaders[1], 0)[0][0])


def test_empty_loader_is_a_clear_error(pp32):
    with pytest.raises(DataError, match="lower batch_size"):
        build_loader(_cfg(batch_size=64), "train", preprocessing=pp32)


@pytest.mark.parametrize("persistent", [False, True])
def test_a_pass_left_before_its_end_ends_its_workers_and_the_next_pass_is_whole(pp32, persistent):
    # A training step that stops mid-epoch (a stop signal, a budget's last epoch cut short, the calibration) closes
    # the pass: its workers must end then, not whenever the garbage collector gets to them (a worker left behind
    # keeps the process from exiting).
    loader = build_loader(_cfg(num_workers=1, persistent_workers=persistent), "train", preprocessing=pp32, seed=1)
    loader.sampler.set_epoch(0)
    batches = iter(loader)
    next(batches)
    workers = list(loader._pass._workers)
    assert [w.is_alive() for w in workers] == [True]
    batches.close()
    assert [w.is_alive() for w in workers] == [False] and loader._pass is None
    assert len(_batches(loader, epoch=1)) == 6  # a new pass starts new workers
