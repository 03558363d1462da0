"""The package's imports obey the rule in deploykit/_layers.py: downward only, no cycles.

Every ``import`` and ``from … import`` in every module is read from its AST, at module level and
inside functions and classes alike (a deferred import is still an edge). Imports under
``if TYPE_CHECKING:`` never run: they are left out of the cycle check but must still go downward.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploykit import _layers

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "deploykit"


@dataclass(frozen=True)
class Edge:
    importer: str  # dotted, relative to the package; "__init__" for the root
    imported: str
    file: str  # relative to the folder that holds the package
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} → {self.imported}"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by its relative dotted name (the root is ``__init__``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_edges(package_dir: Path, package: str) -> list[Edge]:
    """Every import of one of the package's own modules, with its line."""
    modules = module_files(package_dir)
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        type_only = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                file = path.relative_to(package_dir.parent).as_posix()
                for target in sorted(_targets(node, name, path, package, modules)):
                    edges.append(Edge(name, target, file, node.lineno, id(node) in type_only))
    return edges


def _targets(node: ast.Import | ast.ImportFrom, importer: str, path: Path, package: str,
             modules: dict[str, Path]) -> set[str]:
    """The package's modules ``node`` imports: ``from a import b`` is module ``a.b`` when that is a
    module, else module ``a``. Relative imports are resolved against the importer."""
    if isinstance(node, ast.Import):
        dotted = [alias.name for alias in node.names]
    else:
        source = node.module or ""
        if node.level:
            base = [package, *([] if importer == "__init__" else importer.split("."))]
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        dotted = [f"{source}.{alias.name}" if _relative(f"{source}.{alias.name}", package) in modules
                  else source for alias in node.names]
    return {_relative(name, package) for name in dotted} & modules.keys()


def _relative(dotted: str, package: str) -> str:
    if dotted == package:
        return "__init__"
    return dotted[len(package) + 1:] if dotted.startswith(package + ".") else ""


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                nodes.update(id(inner) for inner in ast.walk(statement))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def upward_edges(edges: list[Edge], may_import=_layers.may_import) -> list[Edge]:
    return [edge for edge in edges if not may_import(edge.importer, edge.imported)]


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """The strongly connected components of more than one module (or a module importing itself),
    each as the edges inside it (Tarjan's algorithm, iterative)."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        if not edge.type_only:
            graph.setdefault(edge.importer, []).append(edge)
            graph.setdefault(edge.imported, [])
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            for offset, edge in enumerate(graph[node][position:], start=position):
                nxt = edge.imported
                if nxt not in index:
                    work.append((node, offset + 1))
                    work.append((nxt, 0))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    members = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.add(member)
                        if member == node:
                            break
                    components.append(members)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    found = []
    for members in components:
        inside = [e for m in sorted(members) for e in graph[m] if e.imported in members]
        if len(members) > 1 or inside:
            found.append(inside)
    return found


def top_level_names(path: Path) -> set[str] | None:
    """The names a module defines at its top level (None when it defines ``__getattr__``: it may
    provide any name, as the lazy ``deploykit.training`` does)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return None if "__getattr__" in names else names


def _top_level(body: list[ast.stmt]):
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:`, `try: import x` at top level
            for inner in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", []),
                          *[h.body for h in getattr(node, "handlers", [])]):
                yield from _top_level(inner)


def missing_names(package_dir: Path, package: str) -> list[str]:
    """``from <package module> import name`` where the module defines no ``name`` (and has no such
    submodule): an ImportError waiting in a deferred import."""
    modules = module_files(package_dir)
    defined = {name: top_level_names(path) for name, path in modules.items()}
    found = []
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            source = _relative(node.module, package)
            if source not in modules or defined[source] is None:
                continue
            for alias in node.names:
                submodule = alias.name if source == "__init__" else f"{source}.{alias.name}"
                if alias.name not in defined[source] and submodule not in modules:
                    where = path.relative_to(package_dir.parent).as_posix()
                    found.append(f"{where}:{node.lineno}: {node.module} has no {alias.name}")
    return found


def _report(title: str, edges: list[Edge]) -> str:
    return title + "\n" + "\n".join(f"  {edge}" for edge in sorted(edges, key=str))


# --- the package ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(PACKAGE_DIR, "deploykit")


def test_every_module_is_in_a_layer():
    homeless = []
    for module in module_files(PACKAGE_DIR):
        try:
            _layers.unit_of(module)
        except KeyError:
            homeless.append(module)
    assert not homeless, f"modules in no layer of deploykit/_layers.py: {homeless}"


def test_the_rule_names_real_modules_and_sideways_stays_in_a_layer():
    modules = module_files(PACKAGE_DIR)
    for layer in _layers.LAYERS:
        for unit in layer:
            assert unit in modules, f"_layers.LAYERS names {unit!r}, which is no module of deploykit"
    for source, targets in _layers.SIDEWAYS.items():
        for target in targets:
            assert _layers.layer_of(source) == _layers.layer_of(target), (source, target)


def test_imports_go_downward(edges):
    assert edges, "the walk found no imports at all"
    upward = upward_edges(edges)
    assert not upward, "imports against deploykit/_layers.py:\n" + "\n".join(
        f"  {edge}: {_why(edge)}" for edge in sorted(upward, key=str))


def _why(edge: Edge) -> str:
    source, target = _layers.unit_of(edge.importer), _layers.unit_of(edge.imported)
    if _layers.layer_of(source) == _layers.layer_of(target):
        return f"{source} and {target} share a layer, and SIDEWAYS does not let {source} use {target}"
    return f"{target} is in a layer above {source}"


def test_no_import_cycles(edges):
    found = cycles(edges)
    assert not found, "\n".join(_report(f"import cycle {i + 1}:", c) for i, c in enumerate(found))


def test_every_imported_name_exists():
    missing = missing_names(PACKAGE_DIR, "deploykit")
    assert not missing, "\n".join(missing)


# --- the checker itself -----------------------------------------------------------------------------

def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_walk_sees_deferred_relative_and_type_only_imports(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    from pkg import high\n",  # deferred, closes a cycle
        "high.py": "from . import low\nfrom typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from pkg.sub.leaf import X\n",
        "sub/__init__.py": "",
        "sub/leaf.py": "from ..high import thing\nfrom pkg.sub import leaf\n",
    })
    edges = {(e.importer, e.imported, e.line, e.type_only) for e in import_edges(package, "pkg")}
    assert edges == {
        ("low", "high", 2, False),
        ("high", "low", 1, False),
        ("high", "sub.leaf", 4, True),
        ("sub.leaf", "high", 1, False),
        ("sub.leaf", "sub.leaf", 2, False),
    }


def test_cycles_are_found_with_their_edges_and_type_only_edges_close_none(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.b\n",
        "b.py": "def later():\n    import pkg.c\n",
        "c.py": "from pkg import a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.e\n",
        "e.py": "import pkg.d\n",
    })
    found = cycles(import_edges(package, "pkg"))
    assert [sorted((e.importer, e.imported) for e in c) for c in found] == [
        [("a", "b"), ("b", "c"), ("c", "a")]]
    assert "pkg/b.py:2: b → c" in {str(e) for e in found[0]}


def test_upward_and_sideways_edges_are_named(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "top.py": "",
        "stage_a.py": "import pkg.stage_b\n",
        "stage_b.py": "def f():\n    import pkg.top\n",
    })
    layers = {"top": 0, "stage_a": 1, "stage_b": 1}

    def may_import(importer: str, imported: str) -> bool:
        return layers[imported] > layers[importer]

    upward = sorted(str(e) for e in upward_edges(import_edges(package, "pkg"), may_import))
    assert upward == ["pkg/stage_a.py:1: stage_a → stage_b", "pkg/stage_b.py:2: stage_b → top"]


def test_a_missing_name_is_found(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "",
        "a.py": "X = 1\nif True:\n    Y = 2\ndef f():\n    pass\n",
        "b.py": "def g():\n    from pkg.a import X, Y, f, Z\n    from pkg import a, nothing\n",
    })
    assert missing_names(package, "pkg") == ["pkg/b.py:2: pkg.a has no Z", "pkg/b.py:3: pkg has no nothing"]


@pytest.mark.parametrize(("importer", "imported", "allowed"), [
    ("cli", "pipeline", True),
    ("pipeline", "cli", False),
    ("search.engine", "latency.table", True),  # SIDEWAYS
    ("latency.table", "search.engine", False),
    ("search.proxies", "training", False),
    ("pipeline", "cli.train", False),  # the argparse options are the command layer's
    ("cli", "cli.train", True),
    ("cli.train", "training.config", True),
    ("measure.client", "remote.client", False),  # the measuring service sits below the agent's client
    ("remote.client", "measure.outputs", True),
    ("remote.device", "measure.client", True),
    ("latency.profile", "measure.host", True),
    ("latency.table", "remote.client", False),  # latency and remote are independent stages
    ("remote.server", "latency.sentinel", False),
    ("runtimes.base", "measure.client", False),
    ("targets", "runtimes", False),
    ("latency.table", "latency.predictor", True),  # inside one unit
])
def test_the_rule(importer, imported, allowed):
    assert _layers.may_import(importer, imported) is allowed
