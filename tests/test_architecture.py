"""The package map of docs/architecture.md, enforced: which package may import which (imports inside functions
count too), no import cycle between files, and the size limits that keep modules readable."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
RUNTIME = {"deit.runtime"}
# A package may import itself and the packages listed here; nothing else of deit.
ALLOWED = {
    "deit.runtime": set(),
    "deit.models": set(),
    "deit.checkpoints": {"deit.models"} | RUNTIME,
    "deit.data": {"deit.models"} | RUNTIME,
    "deit.inference": {"deit.models", "deit.checkpoints", "deit.data"} | RUNTIME,
    "deit.train": {"deit.models", "deit.checkpoints", "deit.data", "deit.inference"} | RUNTIME,
    "deit.benchmark": {"deit.models", "deit.checkpoints", "deit.data", "deit.inference", "deit.train"} | RUNTIME,
    "deit.reproduce": {"deit.models", "deit.checkpoints", "deit.data", "deit.inference", "deit.train"} | RUNTIME,
    "deit.cli": {"deit", "deit.models", "deit.checkpoints", "deit.data", "deit.inference", "deit.train",
                 "deit.benchmark", "deit.reproduce"} | RUNTIME,
    "deit": {"deit.models", "deit.checkpoints"},
}
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "deit").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the deit modules it imports anywhere in its file (functions included)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {t for a in node.names if (t := resolve(a.name))}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    target = full if full in mods else resolve(node.module)
                    if target:
                        found.add(target)
        edges[mod] = {t for t in found if t != mod and t.startswith("deit")}
    return edges


def _package(mod: str, mods: dict[str, Path]) -> str:
    return mod if mods[mod].name == "__init__.py" else mod.rpartition(".")[0]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_cycle_between_files():
    assert _cycle(_imports(_modules())) is None


def test_packages_import_only_what_the_map_allows():
    mods = _modules()
    bad = []
    for mod, targets in _imports(mods).items():
        pkg = _package(mod, mods)
        for target in targets:
            tpkg = _package(target, mods)
            if tpkg != pkg and not (pkg == "deit" and tpkg.startswith("deit.")) and tpkg not in ALLOWED[pkg]:
                bad.append(f"{mod} imports {target}")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(sorted(bad))
    assert set(ALLOWED) == {_package(m, mods) for m in mods}, "a package is missing from ALLOWED (and the map)"


def test_no_package_cycle():
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, targets in _imports(mods).items():
        pkg = _package(mod, mods)
        graph.setdefault(pkg, set()).update(p for t in targets if (p := _package(t, mods)) != pkg
                                            and not p.startswith(pkg + "."))
    assert _cycle(graph) is None


def test_files_and_functions_stay_readable():
    long_files, long_functions = [], []
    for path in (SRC / "deit").rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {length} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)


def test_the_map_names_every_package():
    doc = (SRC.parent / "docs" / "architecture.md").read_text()
    missing = [pkg for pkg in ALLOWED if pkg != "deit" and f"`{pkg.replace('deit.', '')}/`" not in doc]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _attribute_calls(path: Path) -> set[str]:
    """The attribute names called in ``path`` (``x.logits(...)`` -> "logits")."""
    tree = ast.parse(path.read_text())
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def test_only_the_task_calls_the_teacher():
    """In training, teacher outputs come from one place: the task object (``deit.train.task``) calls the teacher
    source (``.logits(x, epoch, batch)``); the loop, the hooks and the cache builder go through the task."""
    callers = sorted(str(p.relative_to(SRC)) for p in (SRC / "deit" / "train").glob("*.py")
                     if "logits" in _attribute_calls(p))
    assert callers == ["deit/train/task.py"], callers
    tree = ast.parse((SRC / "deit" / "train" / "engine.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not {n for n in names if "teacher" in n} - {"validation_teacher"}, "the loop must not know the teacher"


# ---- nothing outside deit.data branches on a data set's name: it asks the registry (deit.data.registry)
_LOOKUPS = ("get", "pop", "setdefault")


def _dataset_names() -> frozenset[str]:
    from deit.data import BUILTIN_DATASETS

    return frozenset(BUILTIN_DATASETS)


def _names_a_dataset(node: ast.AST, names: frozenset[str]) -> bool:
    """A data set's name as a literal, or a collection literal holding one."""
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_dataset(e, names) for e in node.elts)
    return False


def _holds_a_dataset(node: ast.AST) -> bool:
    """A value that is a data set's name by where it is kept: ``x.dataset`` (``cfg.data.dataset``, a regime's)."""
    return isinstance(node, ast.Attribute) and node.attr == "dataset"


def name_branches(tree: ast.AST, names: frozenset[str]) -> list[int]:
    """The lines of ``tree`` that decide something by a data set's name: a comparison or ``in`` test with a name
    literal, or of an ``x.dataset`` value (identity tests, ``is None``, aside); a subscript, a dict key or a
    ``.get``/``.pop`` keyed by a name literal; a ``match`` case on one; ``.startswith``/``.endswith`` of an
    ``x.dataset`` value."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            identity = all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops)
            hit = not identity and any(_names_a_dataset(op, names) or _holds_a_dataset(op)
                                       for op in (node.left, *node.comparators))
        elif isinstance(node, ast.Subscript):
            hit = _names_a_dataset(node.slice, names)
        elif isinstance(node, ast.Dict):
            hit = any(key is not None and _names_a_dataset(key, names) for key in node.keys)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            hit = (node.func.attr in _LOOKUPS and bool(node.args) and _names_a_dataset(node.args[0], names)) or (
                node.func.attr in ("startswith", "endswith") and _holds_a_dataset(node.func.value))
        elif isinstance(node, ast.MatchValue):
            hit = _names_a_dataset(node.value, names)
        else:
            hit = False
        if hit:
            lines.append(node.lineno)
    return sorted(set(lines))


def test_nothing_outside_data_branches_on_a_data_set_name():
    """A data set's facts (reads a root, downloads, how a path is recognised or checked) are asked of the registry
    (``deit.data.dataset_spec(name)``), so a new data set is one registration, not edits across the package."""
    names = _dataset_names()
    data = SRC / "deit" / "data"
    bad = []
    for path in sorted((SRC / "deit").rglob("*.py")):
        if data in path.parents:
            continue
        for line in name_branches(ast.parse(path.read_text()), names):
            bad.append(f"{path.relative_to(SRC)}:{line}: {path.read_text().splitlines()[line - 1].strip()}")
    assert not bad, "branches on a data set's name outside deit.data (ask deit.data.dataset_spec):\n" + "\n".join(bad)


def test_the_name_rule_finds_branches():
    names = frozenset({"cifar10", "imagefolder"})
    found = [
        'if cfg.data.dataset == "cifar10": pass',
        'x = dataset in ("imagefolder", "csv")',
        'x = PRESETS["cifar10"]',
        'x = {"cifar10": 1}',
        'x = presets.get("imagefolder")',
        'x = regime.dataset != other',
        'x = cfg.dataset.startswith("cif")',
        'match name:\n    case "cifar10":\n        pass',
    ]
    for source in found:
        assert name_branches(ast.parse(source), names), source
    clean = ['x = REGIMES[name]', 'x = loader.dataset is None', 'x = Regime(name="cifar10")', 'x = suffix == ".csv"',
             'f(dataset="cifar10")',
             'x = spec.reads_root and not cfg.root']
    for source in clean:
        assert not name_branches(ast.parse(source), names), source
