import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datahelpers import make_imagefolder, write_image

from deit.data import BadImageError, DataConfig, build_dataset, build_loader

DEIT = [sys.executable, "-m", "deit"]
REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


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
                     num_workers=1, persistent_workers=True, repeated_aug=False)
    loader = build_loader(cfg, "train", preprocessing=pp32)
    loader.sampler.set_epoch(0)
    with pytest.raises(BadImageError) as caught:
        next(iter(loader))
    # The worker's own error, its one line: not torch's wrapper holding the worker's traceback.
    assert str(caught.value).startswith("cannot read image ") and "\n" not in str(caught.value)
    assert str(caught.value).split(":")[0].rsplit("/", 1)[1] in ("broken.jpg", "notes.png")
    assert "Traceback" not in str(caught.value)
    assert loader._iterator is None  # the failed pass's (persistent) workers were ended
    loader.sampler.set_epoch(0)
    with pytest.raises(BadImageError):  # and a new pass starts new ones
        next(iter(loader))


def _processes_naming(marker: str) -> list[int]:
    """The live processes whose command line holds ``marker`` (a run's unique folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                found += [] if state == "Z" else [int(entry.name)]
        except OSError:  # gone meanwhile
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_bad_image_in_a_worker_ends_the_run_with_one_line_and_no_process_left(tmp_path):
    root = make_imagefolder(tmp_path / "ds", {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2}}, size=(16, 16))
    good = root / "train" / "a" / "0.jpg"
    write_image(good, (16, 16), fmt="JPEG")
    (root / "train" / "a" / "trunc.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cmd = [*DEIT, "train", "--config", "digits-convnet-teacher", "data.dataset=imagefolder", f"data.root={root}",
           "data.on_bad_image=fail", "data.num_workers=1", "data.batch_size=4", "epochs=1", "amp=none",
           "progress=false", f"output_dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the run and its workers, nothing else
        proc.communicate()
        pytest.fail("the run hung after the bad image")
    assert proc.returncode == 2, err
    [line] = err.strip().splitlines()  # what num_workers=0 prints: the file and what went wrong, one line
    assert re.fullmatch(rf"deit train: error: cannot read image {re.escape(str(root))}/train/a/trunc\.jpg: "
                        r"OSError: [^\n]+", line), line
    assert "Traceback" not in err and "Caught" not in err
    deadline = time.monotonic() + 10  # the workers are ended before the main process exits; /proc may lag
    while _processes_naming(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_naming(str(tmp_path)), "a data worker outlived the run"
