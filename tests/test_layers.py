"""The package's structure, read from its source with ``ast`` (no module is imported).

workflow_src/ is layered, lowest first, as ``LAYERS`` lists; a module may import its own
layer and those below it, never one above. The tests below fail on an import cycle, an
import from a lower layer into a higher one, a private name (``_x``) used from another module,
a file over ``MAX_FILE_LINES`` lines or a function over ``MAX_FUNCTION_LINES``. What does not
hold today is listed in the ``PENDING_*`` tables, each entry with why; an entry that no longer
applies fails too (delete it), so the tables only shrink. docs/architecture.md describes the
layers and names, for every rule, its script and the modules it runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workflow_src"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

# The layers, lowest first: each entry names top-level modules ("runtable") or subpackages
# ("metrics", every module in it). A module imports only from its own layer and lower ones.
LAYERS = (
    # plumbing every stage shares, the package's top-level modules: the run table, the config
    # and its schema, the metric registry (declarations read without importing torch; the
    # types it shares with the user indicators in declarations), user indicators, sealing and
    # checking outputs, shards, where every output lies (paths), and the datasets (data/)
    ("base", ("__init__", "runtable", "config", "declarations", "registry", "custom",
              "integrity", "shards", "paths", "data")),
    # nets/: what fixes a network (spec), the MLP and building/loading any (models), the
    # CNNs (cnns, their activation codes in cnn_codes), loading a saved one checked against
    # its record (checked), and the loss a network is trained and measured with (losses)
    ("nets", ("nets",)),
    # metrics/: the computations of the metrics, for one network
    ("metrics", ("metrics",)),
    # measures/: one module per metric, its declaration and measure()
    ("measures", ("measures",)),
    # training/: training one network (train), a stack of them (ensemble, its batched parts
    # in stacked), batch augmentation, and checkpoints
    ("training", ("training",)),
    # jobs/: what a rule's job runs: rule scripts' shared helpers (adapter), the train /
    # measure / snapshot jobs, aggregation of the stores and the learning curves
    ("jobs", ("jobs",)),
    # stats/: statistics over the aggregated tables
    ("stats", ("stats",)),
    # figures/: theme, saving, one module per family
    ("figures", ("figures",)),
)

# Imports from a lower layer into a higher one that remain: (importer, imported) -> why.
PENDING_UPWARD: dict[tuple[str, str], str] = {}
# Import cycles that remain, each as the set of its modules -> why.
PENDING_CYCLES: dict[frozenset, str] = {}
# Private names used from another module: (importer, "module.name") -> why.
PENDING_PRIVATE: dict[tuple[str, str], str] = {}
# Files over MAX_FILE_LINES, relative to workflow_src/ -> why.
PENDING_FILES: dict[str, str] = {}
# Functions over MAX_FUNCTION_LINES: "file.py:qualified name" -> why.
PENDING_FUNCTIONS: dict[str, str] = {}


def module_names() -> dict[str, Path]:
    """Dotted name relative to workflow_src ("metrics.transitions", "__init__") -> path."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return name == "__init__" or MODULES[name].name == "__init__.py"


def absolute(importer: str, node: ast.ImportFrom) -> str | None:
    """The dotted name (relative to workflow_src, "__init__" for the package) that an
    ``from X import ...`` imports from, or None outside workflow_src."""
    if node.level == 0:
        if node.module != "workflow_src" and not node.module.startswith("workflow_src."):
            return None
        parts = node.module.split(".")[1:]
    else:
        parts = [] if importer == "__init__" else importer.split(".")
        if not is_package(importer):
            parts = parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        parts += node.module.split(".") if node.module else []
    return ".".join(parts) or "__init__"


def imports(name: str):
    """(imported module, imported name or None, line) of every import of workflow_src in
    module ``name``, at any depth (imports inside functions count)."""
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.ImportFrom):
            base = absolute(name, node)
            if base is None:
                continue
            for alias in node.names:
                sub = f"{alias.name}" if base == "__init__" else f"{base}.{alias.name}"
                if sub in MODULES:
                    yield sub, None, node.lineno
                else:
                    yield base, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("workflow_src."):
                    yield alias.name.split(".", 1)[1], None, node.lineno


def module_aliases(name: str) -> dict[str, str]:
    """Local names bound to workflow_src modules in module ``name`` -> the module."""
    bound = {}
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.ImportFrom) and absolute(name, node) is not None:
            base = absolute(name, node)
            for alias in node.names:
                sub = alias.name if base == "__init__" else f"{base}.{alias.name}"
                if sub in MODULES:
                    bound[alias.asname or alias.name] = sub
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("workflow_src.") and alias.asname:
                    bound[alias.asname] = alias.name.split(".", 1)[1]
    return bound


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name) if target != name}
            for name in MODULES}


def layer_of(name: str) -> int:
    top = name.split(".")[0]
    for rank, (_, members) in enumerate(LAYERS):
        if name in members or top in members:
            return rank
    raise KeyError(name)


def cycles(edges: dict[str, set[str]]) -> list[frozenset]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def private_uses(name: str):
    """("module.name", line) of every private name module ``name`` takes from another
    module: imported (``from m import _x``), or read off an imported module (``m._x``). A
    private module (``stats/_checks.py``) may be imported within its own package."""
    package = name.rsplit(".", 1)[0] if "." in name else ""
    for target, imported, line in imports(name):
        last = (imported or target.rsplit(".", 1)[-1])
        if not last.startswith("_") or last.startswith("__"):
            continue
        if imported is None and target.rsplit(".", 1)[0] == package:
            continue  # a package's private module, used inside the package
        yield (f"{target}.{imported}" if imported else target), line
    aliases = module_aliases(name)
    for node in ast.walk(TREES[name]):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            yield f"{aliases[node.value.id]}.{node.attr}", node.lineno


def long_functions(name: str):
    """("file.py:qualified.name", lines) of every function over MAX_FUNCTION_LINES, counted
    from its ``def`` line to its last line."""
    rel = MODULES[name].relative_to(PACKAGE).as_posix()

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualified = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = child.end_lineno - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        yield f"{rel}:{qualified}", lines
                yield from walk(child, qualified + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(TREES[name], "")


def check(found: dict, pending: dict, what: str) -> None:
    """Every violation found is pending, and every pending entry is still found."""
    new = {key: found[key] for key in found if key not in pending}
    stale = [key for key in pending if key not in found]
    assert not new, (f"{what}: {new}. Fix them (docs/architecture.md, layers) rather than "
                     f"listing them in tests/test_layers.py")
    assert not stale, (f"{what} listed as pending but fixed: delete {stale} from "
                       f"tests/test_layers.py")


def test_every_module_has_a_layer():
    unplaced = []
    for name in MODULES:
        try:
            layer_of(name)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, f"place {unplaced} in a layer of tests/test_layers.py LAYERS"


def test_the_folders_are_the_layers():
    """Every layer above the base is one folder of workflow_src/ (so the tree shows the
    layers), and the base is the top-level modules plus data/."""
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    for name, members in LAYERS[1:]:
        assert members == (name,) and name in folders, name
    top_level = {p.stem for p in PACKAGE.glob("*.py")}
    assert set(LAYERS[0][1]) == top_level | (folders - {n for n, _ in LAYERS[1:]})


def test_no_import_cycles():
    found = {cycle: sorted(cycle) for cycle in cycles(graph())}
    check(found, PENDING_CYCLES, "import cycles")


def test_no_lower_layer_imports_a_higher_one():
    found = {}
    for name, targets in graph().items():
        for target in targets:
            if layer_of(target) < layer_of(name):
                continue
            if layer_of(target) > layer_of(name):
                found[(name, target)] = (f"{LAYERS[layer_of(name)][0]} imports "
                                         f"{LAYERS[layer_of(target)][0]}")
    check(found, PENDING_UPWARD, "imports from a lower layer into a higher one")


def test_no_private_names_across_modules():
    found = {}
    for name in MODULES:
        for used, line in private_uses(name):
            found[(name, used)] = f"{MODULES[name].relative_to(ROOT)}:{line}"
    check(found, PENDING_PRIVATE, "private names used from another module")


def test_no_file_over_the_line_limit():
    found = {}
    for path in MODULES.values():
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            found[path.relative_to(PACKAGE).as_posix()] = n
    check(found, PENDING_FILES, f"files over {MAX_FILE_LINES} lines")


def test_no_function_over_the_line_limit():
    found = dict(item for name in MODULES for item in long_functions(name))
    check(found, PENDING_FUNCTIONS, f"functions over {MAX_FUNCTION_LINES} lines")


# --- the checks themselves, on small made-up packages ---------------------------------------

def test_cycles_are_found_and_a_dag_has_none():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("source, expected", [
    ("from .integrity import _compare\n", ["integrity._compare"]),
    ("from . import integrity\nintegrity._load_record(1)\n", ["integrity._load_record"]),
    ("from workflow_src.integrity import compare, __doc__\n", []),
    ("from .stats import _checks\n", ["stats._checks"]),
])
def test_private_uses_are_found(monkeypatch, source, expected):
    monkeypatch.setitem(TREES, "probe", ast.parse(source))
    monkeypatch.setitem(MODULES, "probe", PACKAGE / "probe.py")
    assert [used for used, _ in private_uses("probe")] == expected


def test_relative_imports_resolve_from_modules_and_packages():
    node = ast.parse("from ..nets.models import MLP").body[0]
    assert absolute("metrics.transitions", node) == "nets.models"
    node = ast.parse("from .tables import strings").body[0]
    assert absolute("stats", node) == "stats.tables"
    assert absolute("stats.summary", node) == "stats.tables"
    node = ast.parse("from workflow_src.metrics import per_run").body[0]
    assert absolute("figures.job", node) == "metrics"
    assert layer_of("nets.models") < layer_of("metrics.transitions") < layer_of("figures.job")


# --- rule -> script -> module -----------------------------------------------------------------

def test_every_rule_is_in_the_architecture_table():
    """docs/architecture.md names every rule of rules/*.smk (with its script and modules)."""
    rules = {m for smk in (ROOT / "rules").glob("*.smk")
             for m in re.findall(r"^rule (\w+):", smk.read_text(), re.M)}
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("## Rule → script → module"):]
    missing = sorted(r for r in rules if f"`{r}`" not in table)
    assert not missing, f"add rows for {missing} to docs/architecture.md's rule table"


def test_every_module_is_in_the_folder_layout():
    """docs/architecture.md's folder layout names every module of workflow_src/ (one per
    metric in measures/ aside: the layout names the folder)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    layout = doc[doc.index("## Folder layout"):doc.index("## Rule → script → module")]
    words = set(re.findall(r"[\w/]+", layout))
    missing = sorted(
        rel for rel in (p.relative_to(PACKAGE).as_posix() for p in MODULES.values())
        if not rel.startswith("measures/") and not rel.endswith("/__init__.py")
        and not ({rel, rel.removesuffix(".py"), Path(rel).name, Path(rel).stem} & words))
    assert not missing, f"add {missing} to docs/architecture.md's folder layout"
