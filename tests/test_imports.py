"""The import structure of the ``hyperfeat`` package: no cycles, and every module imports.

The graph is read from the source with ``ast``: every ``import`` / ``from ... import`` at any
depth (module level, inside functions, under ``if``), relative imports resolved, each name
taken to the hyperfeat module it lands in (``from hyperfeat.model import features`` is the
module ``hyperfeat.model.features``; ``from hyperfeat.model import FeatureExtractor`` is the
package ``hyperfeat.model``, i.e. its ``__init__``). A lazy import inside a function still
counts: it hides a cycle from the interpreter, not from the reader.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = "hyperfeat"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name → file, packages named by their ``__init__.py``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The hyperfeat module a dotted name lands in: itself, else its longest module prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every hyperfeat module that ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import b
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # a name is a submodule when one exists by that name, else an attribute of `source`
            names = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
            ]
        else:
            continue
        for name in names:
            target = resolve(name, modules) if name.split(".")[0] == PACKAGE else None
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a → b → … → a) per strongly connected component of more than one
    module (Tarjan's algorithm, then a shortest cycle through the component's first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        members, start = set(component), component[0]
        previous = {start: None}
        queue = [start]
        while queue:  # breadth-first inside the component, back to start
            node = queue.pop(0)
            for succ in sorted(graph[node] & members):
                if succ == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    cycles.append(list(reversed(path)) + [start])
                    queue = []
                    break
                if succ not in previous:
                    previous[succ] = node
                    queue.append(succ)
    return cycles


# ---------------------------------------------------------------------------- the checker itself


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / PACKAGE


def test_graph_resolves_every_import_form(tmp_path):
    package = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "import os\nimport hyperfeat.sub.b\nfrom hyperfeat.sub import c\nfrom hyperfeat import sub\n",
            "sub/__init__.py": "from .b import thing\n",
            "sub/b.py": "def f():\n    from ..a import x\n",  # lazy and relative: still an edge
            "sub/c.py": "from hyperfeat.sub import thing\nfrom . import b\n",  # `thing` is the package's
        },
    )
    graph = import_graph(package)
    assert graph == {
        "hyperfeat": set(),
        "hyperfeat.a": {"hyperfeat.sub.b", "hyperfeat.sub.c", "hyperfeat.sub"},
        "hyperfeat.sub": {"hyperfeat.sub.b"},
        "hyperfeat.sub.b": {"hyperfeat.a"},
        "hyperfeat.sub.c": {"hyperfeat.sub", "hyperfeat.sub.b"},
    }
    (cycle,) = find_cycles(graph)
    assert cycle == ["hyperfeat.a", "hyperfeat.sub.b", "hyperfeat.a"]


def test_cycle_finder_on_known_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    two = find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}})
    assert sorted(two) == [["a", "b", "a"], ["c", "d", "c"]]


# ---------------------------------------------------------------------------- the package


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert {"hyperfeat", "hyperfeat.api", "hyperfeat.model.features", "hyperfeat.cli.track"} <= set(graph)
    assert "hyperfeat.model.aggregation" in graph["hyperfeat.model.checkpoint"]  # a known edge


def test_no_import_cycle_in_hyperfeat():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in hyperfeat:\n" + "\n".join(" -> ".join(c) for c in cycles)


IMPORT_EACH = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "hyperfeat" or m.startswith("hyperfeat.")]:
        del sys.modules[loaded]  # each module imported first, as a user's script would
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


def test_every_module_imports_on_its_own():
    """Each module imported in a fresh ``hyperfeat`` (heavy third-party modules stay loaded, so
    one process serves all), so an import that only works after some other module fails here."""
    names = [name for name in module_files() if not name.endswith("__main__")]  # __main__ runs the CLI
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, json.dumps(names)],
        cwd=ROOT.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{name}:\n{tb}" for name, tb in failures.items())


def test_library_imports_neither_the_commands_nor_the_test_builders():
    """The layout's two one-way rules (docs/ARCHITECTURE.md): ``cli/`` is never imported by the
    library, and ``hyperfeat.testing`` (for tests and benchmarks) by nothing in the package."""
    graph = import_graph()
    on_cli = sorted(
        module
        for module, targets in graph.items()
        if not module.startswith("hyperfeat.cli")
        and any(t == "hyperfeat.cli" or t.startswith("hyperfeat.cli.") for t in targets)
    )
    assert on_cli == [], on_cli
    on_testing = sorted(module for module, targets in graph.items() if "hyperfeat.testing" in targets)
    assert on_testing == [], on_testing


# ---------------------------------------------------------------------------- the layers

# The package's stages, lowest first (docs/ARCHITECTURE.md): a module may import its own stage and
# the ones below it, never one above. Derived from the tree: the video functions run describers
# and correspondence, pictures draw videos, data sets read videos, evaluation draws and loads data,
# training validates with the evaluation's PCK, the API adapts with training's walk, and the page
# and the commands sit on top of everything.
LAYERS = [
    ("errors", "version", "geometry", "config", "settings", "images", "io", "hub", "quiet"),
    ("model",),
    ("describe",),
    ("correspond",),
    ("video",),
    ("viz",),
    ("data",),
    ("eval",),
    ("train",),
    ("api",),
    ("web", "cli", "testing", "__main__", ""),  # "": the package's own __init__
]
# Edges that break the order today, each to go (new ones fail the test):
KNOWN_UPWARD: set = set()


def stage_of(module: str) -> int:
    name = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if name in names:
            return index
    raise AssertionError(f"{module} is in no stage of LAYERS: add its package to the table")


def test_the_layer_checker_on_a_known_graph():
    graph = {"hyperfeat.model.a": {"hyperfeat.errors"}, "hyperfeat.errors": {"hyperfeat.viz.b"}}
    upward = [(m, t) for m, ts in graph.items() for t in ts if stage_of(t) > stage_of(m)]
    assert upward == [("hyperfeat.errors", "hyperfeat.viz.b")]


def test_a_lower_stage_never_imports_a_higher_one():
    graph = import_graph()
    upward = sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if stage_of(target) > stage_of(module) and (module, target) not in KNOWN_UPWARD
    )
    assert not upward, "imports against the layer order (LAYERS):\n" + "\n".join(f"{m} -> {t}" for m, t in upward)
