import logging

import pytest
import torch
from datahelpers import make_imagefolder

from deit.data import BadImageError, DataConfig, build_dataset, build_loader


@pytest.fixture
def with_bad(tmp_path):
    root = make_imagefolder(tmp_path / "ds", {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2}})
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "train" / "b" / "notes.png").write_text("this is text")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_replaces_counts_and_reports_once(with_bad, pp32, caplog, workers):
    cfg = DataConfig(dataset="imagefolder", root=str(with_bad), batch_size=2, num_workers=workers,
                     persistent_workers=False, repeated_aug=False)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 14
    bad = [i for i in range(len(ds)) if ds.describe(i).endswith(("broken.jpg", "notes.png"))]
    with caplog.at_level(logging.WARNING, logger="deit.data"):
        img, label, errors = ds.fetch(bad[0])
    assert img.size == (40, 30) and label in (0, 1)
    assert len(ds.bad_files) >= 1 and ("broken.jpg" in errors[0] or "notes.png" in errors[0])
    assert not caplog.text  # no line per file: the training loop reports the epoch's bad images once
    assert ds[bad[0]][1] == label  # the replacement is reproducible
    # a whole epoch through the loader does not die on the bad files, and gathers them from every worker
    loader = build_loader(cfg, "train", preprocessing=pp32, dataset=ds)
    loader.sampler.set_epoch(0)
    xs = torch.cat([x for x, _ in loader])
    assert xs.shape[0] == 14 and torch.isfinite(xs).all()
    assert len(loader.bad_images) == 2
    assert {e.split(":")[0].rsplit("/", 1)[1] for e in loader.bad_images} == {"broken.jpg", "notes.png"}


def test_fail_names_the_file(with_bad):
    cfg = DataConfig(dataset="imagefolder", root=str(with_bad), on_bad_image="fail")
    ds = build_dataset(cfg, "train")
    bad = next(i for i in range(len(ds)) if ds.describe(i).endswith("broken.jpg"))
    with pytest.raises(BadImageError, match="broken.jpg"):
        ds[bad]


def test_fail_names_the_file_from_a_worker(with_bad, pp32):
    cfg = DataConfig(dataset="imagefolder", root=str(with_bad), on_bad_image="fail", batch_size=14,
                     num_workers=1, persistent_workers=False, repeated_aug=False)
    loader = build_loader(cfg, "train", preprocessing=pp32)
    loader.sampler.set_epoch(0)
    with pytest.raises(Exception, match="broken.jpg|notes.png"):
        next(iter(loader))
