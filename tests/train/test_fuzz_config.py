"""Fuzzing the config parser: a valid config file with characters flipped, inserted, deleted or cut off, and
`key=value` overrides of any text, loaded as `deit train --config FILE key=value ...` loads them. Each either
gives a checked config or fails with one of our errors (one line, exit code 2): never another exception, never a
hang. Deterministic (derandomized, fixed example counts), a few seconds each."""

from __future__ import annotations

import pytest
from fuzz_support import no_hang
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deit.cli.errors import USER_ERRORS
from deit.runtime.typedconfig import flatten, to_dict
from deit.train.presets import dump_config, load_config

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PRESET = "digits-deit-distilled"
# The characters YAML gives meaning to, and some that it refuses (tab, NUL, a lone surrogate is not text).
YAML_CHARS = st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \t\n\x00\\") + list("ab01.eE+~"))



def _load_or_our_error(config, overrides=()) -> None:
    try:
        with no_hang():
            load_config(config, list(overrides))
    except USER_ERRORS as exc:  # what the CLI prints as one line, exit code 2
        assert str(exc).strip(), repr(exc)


VALID = dump_config(load_config(PRESET))  # every key, as a run directory's config.yaml holds them


@st.composite
def mutated_text(draw, text: str):
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(chars)))
        if kind == "replace" and pos < len(chars):
            chars[pos] = draw(YAML_CHARS)
        elif kind == "insert":
            chars[pos:pos] = draw(st.lists(YAML_CHARS, min_size=1, max_size=6))
        elif kind == "delete":
            del chars[pos:pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del chars[pos:]
    return "".join(chars)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return tmp_path_factory.mktemp("config") / "config.yaml"


def test_mutated_config_files_load_or_fail_with_our_error(config_file):
    @FUZZ
    @given(text=mutated_text(VALID))
    @example(text="a: &x [*x]\n")  # a list that holds itself
    @example(text="epochs: 2024-02-30\n")  # a date YAML cannot build
    @example(text="epochs: .inf\n")
    @example(text="base: config.yaml\n")  # a base chain that loops
    @example(text="[" * 1100)  # deeper than Python's recursion limit (PyYAML's scanner is quadratic in it)
    def check(text):
        config_file.write_text(text)
        _load_or_our_error(config_file)

    check()


KEYS = sorted(flatten(to_dict(load_config(PRESET))))
VALUES = st.one_of(st.text(max_size=12), st.lists(YAML_CHARS, max_size=12).map("".join),
                   st.sampled_from(["null", "-1", "0", "1e309", ".nan", "[]", "{}", "[1, 2", "{a: 1}", "true",
                                    "2024-02-30", "&a [*a]", "!!python/object:os.system", "0x10", "1_000"]))


def test_overrides_of_any_text_load_or_fail_with_our_error():
    @FUZZ
    @given(overrides=st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=10), VALUES)
                              .map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=20), min_size=1, max_size=3))
    @example(overrides=["optim.lr=[1e-3, 2"])
    @example(overrides=["epochs=2024-02-30"])
    @example(overrides=["data=3"])
    @example(overrides=["=1"])
    def check(overrides):
        _load_or_our_error(PRESET, overrides)

    check()
