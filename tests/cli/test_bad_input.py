"""Bad input, as a new user gives it, to every verb that takes a checkpoint or a config: each ends in one line
naming the problem and the fix, exit code 2, within seconds, with no process left behind.

The full matrix (every bad file for every such verb) runs in one process through the CLI's entry point (a process
start costs 1-2 s); each kind of bad input also runs once as its own `python -m deit`, as a user types it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_support import DEIT, REPO, SUBPROCESS_ENV, tiny_overrides  # noqa: E402

from deit.checkpoints import save_checkpoint  # noqa: E402
from deit.models import build_architecture  # noqa: E402
from deit.train.checkpointing import RunDir, rng_states  # noqa: E402
from deit.train.engine import Progress  # noqa: E402
from deit.train.presets import dump_config, load_config  # noqa: E402

TIMEOUT = 60  # seconds: a hang fails the test, it does not stall the suite
TINY_VIT = dict(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2)


def run_cli(args: list[str], cwd: Path, timeout: float = TIMEOUT, stdout=subprocess.PIPE) -> tuple[int, str, str]:
    """`python -m deit ARGS` in its own process group: (exit code, stdout, stderr). Fails on a hang, and when any
    process of the group (a data loader worker, a child) outlives the command."""
    proc = subprocess.Popen([*DEIT, *args], cwd=cwd, env={**SUBPROCESS_ENV, "PYTHONPATH": str(REPO / "src")},
                            stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"deit {' '.join(args)} still ran after {timeout} s")
    assert_group_gone(proc.pid)
    return proc.returncode, out or "", err


def assert_group_gone(pgid: int) -> None:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail("a process of the command outlived it")


def assert_one_line(rc: int, err: str, verb: str, *expected: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, f"exit {rc}, stderr:\n{err}"
    line = lines[0]
    assert line.startswith(f"deit {verb}: error: ") and "Traceback" not in err, line
    assert "unexpected" not in line and "rerun with --debug" not in line, line
    for words in expected:
        assert words in line, f"{words!r} not in: {line}"
    return line


# ------------------------------------------------------------------------------------------------ the bad files
def _onnx_model(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, producer_name="pytorch"), str(path))


def _training_state(run: Path) -> Path:
    """A state.pt as a run directory holds it (the keys of Trainer.state_dict; the RNG states hold numpy)."""
    model = build_architecture("deit_tiny_patch16_224", num_classes=4, **TINY_VIT)
    optimizer = torch.optim.AdamW(model.parameters())
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, run / "best.safetensors")
    RunDir(run).save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": None,
                            "scaler": None, "progress": Progress().state_dict(), "meter": {}, "rng": rng_states(),
                            "world_size": 1, "config": {}})
    return run / "state.pt"


# case -> words the one line must hold: what the file is, and what to do.
CASES = {
    "random": ("is not a checkpoint deit can read", "pass a .safetensors or .pth checkpoint"),
    "empty": ("is empty (0 bytes)", "save the checkpoint again"),
    "truncated": ("truncated", "save it again"),
    "directory": ("is a directory", "pass a checkpoint file"),
    "onnx": ("is an ONNX model", "onnxruntime"),
    "torchscript": ("is a TorchScript archive", "torch.jit.load"),
    "training-state": ("is a training state", "best.safetensors", "deit train --resume"),
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {"random": d / "weights.pth", "empty": d / "empty.safetensors", "truncated": d / "cut.safetensors",
             "directory": d / "folder", "onnx": d / "model.onnx", "torchscript": d / "scripted.pt"}
    files["random"].write_bytes(random.Random(0).randbytes(4096))
    files["empty"].write_bytes(b"")
    whole = d / "whole.safetensors"
    save_checkpoint(build_architecture("deit_tiny_patch16_224", num_classes=4, **TINY_VIT), whole)
    files["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    files["directory"].mkdir()
    _onnx_model(files["onnx"])
    with warnings.catch_warnings():  # torch.jit is deprecated, and still what `deit export` writes
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(3, 3)), str(files["torchscript"]))
    files["training-state"] = _training_state(d / "run")
    return files


def verb_args(verb: str, ck: Path, work: Path) -> list[str]:
    """The command line of ``verb`` given the checkpoint ``ck`` (tiny data, so a command that got past the
    checkpoint would finish quickly too)."""
    data = ["--data", "synthetic", "--set", "img_size=16", "synthetic_classes=4", "synthetic_val=8"]
    img = work / "img.png"
    if not img.exists():
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    img = str(img)
    teacher = tiny_overrides(work / "out", extra=("distillation.type=hard", f"teacher.checkpoint={ck}"))
    return {
        "eval": ["eval", "--checkpoint", str(ck), *data],
        "predict": ["predict", img, "--checkpoint", str(ck)],
        "convert": ["convert", str(ck), str(work / "out.safetensors")],
        "export": ["export", str(ck), "-o", str(work / "out.onnx")],
        "analyze tokens": ["analyze", "tokens", str(ck), *data],
        "analyze attention": ["analyze", "attention", str(ck), img],
        "analyze agreement": ["analyze", "agreement", str(ck), "--teacher", str(ck), *data],
        "train teacher": ["train", "--config", "digits-deit-distilled", *teacher],
        "train finetune": ["train", "--config", "digits-convnet-teacher",
                           *tiny_overrides(work / "ft", extra=(f"model.finetune={ck}",))],
        "teacher-cache build": ["teacher-cache", "build", "--config", "digits-deit-distilled", "--output",
                                str(work / "cache"), *teacher],
    }[verb]


VERBS = ("eval", "predict", "convert", "export", "analyze tokens", "analyze attention", "analyze agreement",
         "train teacher", "train finetune", "teacher-cache build")

# Runs deit's entry point once per command line, in one process: [{"rc", "err"}] as JSON on stdout.
DRIVER = """
import contextlib, io, json, sys
from deit.cli import main
results = []
for argv in json.load(open(sys.argv[1])):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    results.append({"rc": rc, "err": err.getvalue()})
print(json.dumps(results))
"""


def run_batch(commands: list[list[str]], tmp_path: Path) -> list[dict]:
    """Every command line through deit.cli.main in one fresh process (in its own group, with a timeout)."""
    spec = tmp_path / "commands.json"
    spec.write_text(json.dumps(commands))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(spec)], cwd=tmp_path, text=True,
                            env={**SUBPROCESS_ENV, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{len(commands)} bad-input commands did not finish within {TIMEOUT} s")
    assert_group_gone(proc.pid)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_every_bad_checkpoint_for_every_verb(bad, tmp_path):
    matrix = [(case, verb) for case in CASES for verb in VERBS]
    results = run_batch([verb_args(verb, bad[case], tmp_path) for case, verb in matrix], tmp_path)
    for (case, verb), result in zip(matrix, results, strict=True):
        assert_one_line(result["rc"], result["err"], verb.split()[0], *CASES[case])


# Each case once as a user types it, each with another verb, so every verb also runs as its own process.
DIAGONAL = list(zip(CASES, ("eval", "predict", "convert", "export", "analyze agreement", "teacher-cache build",
                            "train teacher"), strict=True))


@pytest.mark.parametrize("case, verb", DIAGONAL, ids=[f"{c}-{v}" for c, v in DIAGONAL])
def test_bad_checkpoint_as_typed(case, verb, bad, tmp_path):
    rc, _, err = run_cli(verb_args(verb, bad[case], tmp_path), tmp_path)
    assert_one_line(rc, err, verb.split()[0], *CASES[case])


# ------------------------------------------------------------------------------------------ the bad config files
BROKEN_YAML = "epochs: 3\noptim:\n  lr: [1e-3, 2\n"  # an unclosed flow sequence, opened at line 3, column 7

CONFIG_CASES = {
    "yaml-syntax": ("broken.yaml", BROKEN_YAML, ("broken.yaml: YAML syntax error", "line 3, column 7",
                                                 "fix the YAML there")),
    # The error is in a base the file names: the line names the base.
    "yaml-in-base": ("child.yaml", "base: broken.yaml\nepochs: 2\n", ("broken.yaml: YAML syntax error",
                                                                      "line 3, column 7")),
    "tabs": ("tabs.yaml", "optim:\n\tlr: 1e-3\n", ("tabs.yaml: YAML syntax error", "line 2", "not allow tabs")),
    "not-utf8": ("random.yaml", random.Random(1).randbytes(512), ("is not UTF-8 text", "pass a YAML config")),
    "empty": ("empty.yaml", "", ("empty.yaml is empty", "deit train --list")),
    "not-a-mapping": ("list.yaml", "- a\n- b\n", ("must be a mapping",)),
    "directory": ("folder", None, ("is a directory", "pass a YAML file")),
    "bad-date": ("date.yaml", "epochs: 2024-02-30\n", ("date.yaml: YAML value that cannot be read", "quote it")),
}


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("configs")
    (d / "broken.yaml").write_text(BROKEN_YAML)
    out = {}
    for case, (name, content, _) in CONFIG_CASES.items():
        path = d / name
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        out[case] = path
    return out


def config_args(verb: str, config: Path, work: Path) -> list[str]:
    if verb == "train":
        return ["train", "--config", str(config), f"output_dir={work / 'out'}"]
    return ["teacher-cache", "build", "--config", str(config), "--output", str(work / "cache")]


def test_every_bad_config_for_every_verb(configs, tmp_path):
    matrix = [(case, verb) for case in CONFIG_CASES for verb in ("train", "teacher-cache build")]
    results = run_batch([config_args(verb, configs[case], tmp_path) for case, verb in matrix], tmp_path)
    for (case, verb), result in zip(matrix, results, strict=True):
        assert_one_line(result["rc"], result["err"], verb.split()[0], *CONFIG_CASES[case][2])


@pytest.mark.parametrize("case, verb", [("yaml-syntax", "train"), ("yaml-in-base", "teacher-cache build")])
def test_bad_config_as_typed(case, verb, configs, tmp_path):
    rc, _, err = run_cli(config_args(verb, configs[case], tmp_path), tmp_path)
    assert_one_line(rc, err, verb.split()[0], *CONFIG_CASES[case][2])


def _run_dir(root: Path, config_text: str | None = None, state: bytes | None = None) -> Path:
    """A run directory as `deit train` leaves it, with its config.yaml (or given text) and a state.pt."""
    root.mkdir(parents=True)
    cfg = load_config("digits-convnet-teacher", tiny_overrides(root, distilled=False))
    (root / "config.yaml").write_text(config_text if config_text is not None else dump_config(cfg))
    if state is not None:
        (root / "state.pt").write_bytes(state)
    return root


def test_a_run_dirs_damaged_files(tmp_path):
    """The run's config.yaml broken by hand, read by --resume and by resume=auto; a torn state.pt."""
    broken = _run_dir(tmp_path / "broken", BROKEN_YAML, state=b"x")
    torn = _run_dir(tmp_path / "torn", state=b"PK\x03\x04" + bytes(100))
    valid = yaml.safe_load((torn / "config.yaml").read_text())
    auto = ["train", "--config", "digits-convnet-teacher", *tiny_overrides(broken, distilled=False)]
    results = run_batch([["train", "--resume", str(broken)], auto, ["train", "--resume", str(torn)]], tmp_path)
    assert_one_line(results[0]["rc"], results[0]["err"], "train", f"{broken / 'config.yaml'}: YAML syntax error",
                    "line 3, column 7")
    assert_one_line(results[1]["rc"], results[1]["err"], "train", f"{broken / 'config.yaml'}: YAML syntax error")
    assert_one_line(results[2]["rc"], results[2]["err"], "train", f"{torn / 'state.pt'} cannot be read",
                    "model.finetune=", "--fresh")
    assert (torn / "state.pt").stat().st_size == 104 and yaml.safe_load((torn / "config.yaml").read_text()) == valid


def test_a_run_directory_given_as_config_or_checkpoint(bad, tmp_path):
    run = bad["training-state"].parent
    results = run_batch([["train", "--config", str(run)], ["eval", "--checkpoint", str(run), "--data", "synthetic"]],
                        tmp_path)
    assert_one_line(results[0]["rc"], results[0]["err"], "train", "is a run directory", f"--resume {run}")
    assert_one_line(results[1]["rc"], results[1]["err"], "eval", "is a directory", str(run / "best.safetensors"))


# ---------------------------------------------------------------------------------------------- a closed pipe
def test_a_reader_that_closes_early_ends_the_command_quietly(bad, tmp_path):
    """`deit predict ... | head -3`: the reader goes away; deit stops without a word, as other tools do."""
    ck = tmp_path / "many.safetensors"
    save_checkpoint(build_architecture("deit_tiny_patch16_224", num_classes=1000, **TINY_VIT), ck)
    images = []
    for i in range(8):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(images[-1])
    read, write = os.pipe()
    os.close(read)  # the reader is gone before deit writes its first line
    try:
        rc, _, err = run_cli(["predict", *map(str, images), "--checkpoint", str(ck), "--top-k", "1000"], tmp_path,
                             stdout=write)
    finally:
        os.close(write)
    assert err == "" and rc == 128 + signal.SIGPIPE  # what a shell reports for a tool SIGPIPE stopped
