"""The import graph between zlh's top-level packages and modules stays acyclic and layered.

Nodes are ``zlh.<name>`` for every top-level package or module under ``src/zlh`` (``zlh.api``,
``zlh.proxy``, ``zlh.doctor``, ``zlh.cliargs``...) plus ``zlh`` itself for the package's
``__init__``. An edge ``A -> B`` is any import in a module of ``A`` of a module of ``B``, read
with :mod:`ast` without importing anything: top-level imports, imports inside functions (lazy
imports count: they still tie the packages together), ``TYPE_CHECKING`` blocks, and the
dynamic forms the code base uses -- ``importlib.import_module("zlh.x")`` and ``"zlh.x:func"``
handler targets, which ``zlh.cli`` resolves when a command runs.

Two rules:

* no cycle between nodes (the failure names the cycle and the import lines that close it);
* the agent and the control plane share nothing but the wire schemas and a few bottom modules:
  nothing in ``zlh.agent`` reaches ``zlh.api`` or ``zlh.proxy``, directly or through another
  node, and neither of those reaches ``zlh.agent``.
"""

from __future__ import annotations

import ast
import textwrap
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

import zlh

ROOT = "zlh"
SRC = Path(zlh.__file__).resolve().parent

# Lazy edges that are the deliberate design and may close a cycle: (from node, to node) -> why.
# Empty: the CLI entry point imports every package's arguments module, and no package imports
# it back (they take their argument helpers from the bottom module zlh.cliargs).
ALLOWED_LAZY_CYCLE_EDGES: dict[tuple[str, str], str] = {}

# What the agent and the control plane (API and front) may both depend on. Everything here is
# at the bottom of the graph: it imports no other zlh node but these (checked below).
SHARED_BOTTOM = {
    "zlh": "the package itself: __version__",
    "zlh.schemas": "the wire models the agent and the API exchange (payload, status, errors)",
    "zlh.errors": "the base exceptions every command maps to exit codes and messages",
    "zlh.atomic": "the one temp-file-and-rename writer",
    "zlh.http_range": "one Range request parser: the agent's files route and the artifact server",
    "zlh.listen": "HOST:PORT parsed one way and checked free before start: every server command",
    "zlh.cliargs": "--data-dir and handler helpers every package's arguments module uses",
    "zlh.ports": "the ports inside every container: the payload, the backends and the front",
    "zlh.install": "the verified installer: the agent's installs and the host's shared layers",
}
AGENT = "zlh.agent"
CONTROL_PLANE = ("zlh.api", "zlh.proxy")


@dataclass(frozen=True)
class Edge:
    source: str  # node
    target: str  # node
    where: str  # "path:line"
    imported: str  # the module named by the import
    lazy: bool  # inside a function (or dynamic): runs only when called


Graph = Mapping[str, Mapping[str, list[Edge]]]


def node_of(module: str) -> str:
    """``zlh.api.routes.ide`` -> ``zlh.api``; ``zlh`` -> ``zlh``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _module_name(root: Path, path: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, package: str, dotted: str) -> bool:
    """Whether ``dotted`` (under ``package``) names a module or package in ``root``."""
    rel = Path(*dotted.split(".")[1:]) if dotted != package else Path()
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, package: str) -> None:
        self.module = module
        self.is_package = is_package
        self.package = package
        self.depth = 0  # > 0 inside a function body
        self.found: list[tuple[str, int, bool]] = []  # (imported module, line, lazy)
        self.commands: set[int] = set()  # ids of "-m", "zlh.x" strings: a process, not an import

    def _add(self, name: str, line: int, lazy: bool) -> None:
        if name == self.package or name.startswith(self.package + "."):
            self.found.append((name, line, lazy))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno, self.depth > 0)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")
            if not self.is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base)
            name = f"{prefix}.{node.module}" if node.module else prefix
        else:
            name = node.module or ""
        # `from pkg import sub` imports pkg.sub when sub is a module: resolved by the caller.
        for alias in node.names:
            self.found.append((f"{name}\0{alias.name}", node.lineno, self.depth > 0))

    def visit_List(self, node: ast.List) -> None:
        self._command_line(node.elts)
        self.generic_visit(node)

    def visit_Tuple(self, node: ast.Tuple) -> None:
        self._command_line(node.elts)
        self.generic_visit(node)

    def _command_line(self, elements: list[ast.expr]) -> None:
        for flag, arg in pairwise(elements):
            if isinstance(flag, ast.Constant) and flag.value == "-m":
                self.commands.add(id(arg))

    def visit_Constant(self, node: ast.Constant) -> None:
        # "zlh.x.y:func" handler targets and importlib.import_module("zlh.x.y"): dynamic imports.
        value = node.value
        if id(node) in self.commands:
            return
        if isinstance(value, str) and value.startswith(self.package + "."):
            target = value.partition(":")[0]
            if target.replace(".", "").replace("_", "").isalnum():
                # Kept only if it names a module (not a logger or a file name): build_graph.
                self.found.append((f"{target}\0", node.lineno, True))


def build_graph(root: Path, package: str = ROOT) -> dict[str, dict[str, list[Edge]]]:
    """The node graph of the package in ``root`` (the directory holding its ``__init__.py``)."""
    graph: dict[str, dict[str, list[Edge]]] = {}
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path, package)
        source = node_of(module)
        graph.setdefault(source, {})
        collector = _Collector(module, path.name == "__init__.py", package)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for raw, line, lazy in collector.found:
            name, sep, attr = raw.partition("\0")
            if sep and not attr:  # a string constant: a dynamic import if it names a module
                if not _is_module(root, package, name):
                    continue
                imported = name
            elif sep:
                if not (name == package or name.startswith(package + ".")):
                    continue
                sub = f"{name}.{attr}"
                imported = sub if attr != "*" and _is_module(root, package, sub) else name
            else:
                imported = name
            target = node_of(imported)
            if target == source:
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            edges = graph[source].setdefault(target, [])
            if not any(e.where == where and e.imported == imported for e in edges):
                edges.append(Edge(source, target, where, imported, lazy))
    return graph


def _without_allowed(graph: Graph, allowed: Iterable[tuple[str, str]]) -> Graph:
    allowed = set(allowed)
    pruned: dict[str, dict[str, list[Edge]]] = {}
    for source, targets in graph.items():
        pruned[source] = {}
        for target, edges in targets.items():
            kept = [e for e in edges if not (e.lazy and (source, target) in allowed)]
            if kept:
                pruned[source][target] = kept
    return pruned


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one node, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _shortest_path(graph: Graph, start: str, goal: str, within: set[str] | None) -> list[str]:
    """Nodes from ``start`` to ``goal`` (both included), or [] when there is no path."""
    previous: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph.get(node, {})):
            if within is not None and nxt not in within:
                continue
            if nxt == goal:
                path = [goal, node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return path[::-1]
            if nxt not in seen:
                seen.add(nxt)
                previous[nxt] = node
                queue.append(nxt)
    return []


def describe(graph: Graph, path: list[str]) -> str:
    """``a -> b -> a`` and, for each step, the import lines that make it."""
    lines = [" -> ".join(path)]
    for source, target in pairwise(path):
        for edge in graph[source][target]:
            kind = " (lazy)" if edge.lazy else ""
            lines.append(f"    {edge.where}: {source} imports {edge.imported}{kind}")
    return "\n".join(lines)


def find_cycles(graph: Graph) -> list[str]:
    """The shortest cycle through each node that is on one, each cycle once, described."""
    cycles: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for component in _strongly_connected(graph):
        members = set(component)
        for node in component:
            path = _shortest_path(graph, node, node, members)
            # The same cycle from another of its nodes is a rotation of this one.
            ring = path[:-1]
            first = ring.index(min(ring))
            key = tuple(ring[first:] + ring[:first])
            if key not in seen:
                seen.add(key)
                cycles.append(describe(graph, [*key, key[0]]))
    return cycles


def find_paths(graph: Graph, sources: Iterable[str], targets: Iterable[str]) -> list[str]:
    """A shortest import path from each source to each target it reaches, described."""
    found = []
    for source in sources:
        for target in targets:
            path = _shortest_path(graph, source, target, None)
            if path:
                found.append(describe(graph, path))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[Edge]]]:
    return build_graph(SRC)


def test_the_graph_is_read_from_the_source_tree(graph: Graph) -> None:
    # Not vacuous: the real tree's nodes and some known edges are there.
    for node in ("zlh.agent", "zlh.api", "zlh.proxy", "zlh.schemas", "zlh.cli", "zlh.doctor"):
        assert node in graph, node
    assert "zlh.schemas" in graph["zlh.agent"]
    assert "zlh.schemas" in graph["zlh.api"]
    assert "zlh.api" in graph["zlh.cli"]  # lazy: build_parser imports each package's arguments


def test_no_import_cycle_between_top_level_packages(graph: Graph) -> None:
    cycles = find_cycles(_without_allowed(graph, ALLOWED_LAZY_CYCLE_EDGES))
    assert not cycles, "import cycles between zlh's top-level packages:\n" + "\n".join(cycles)


def test_allowed_lazy_edges_are_still_needed(graph: Graph) -> None:
    for source, target in ALLOWED_LAZY_CYCLE_EDGES:
        edges = graph.get(source, {}).get(target, [])
        assert any(e.lazy for e in edges), f"stale allow-list entry {source} -> {target}"


def test_the_agent_and_the_control_plane_share_only_the_bottom_modules(graph: Graph) -> None:
    crossings = find_paths(graph, [AGENT], CONTROL_PLANE) + find_paths(
        graph, CONTROL_PLANE, [AGENT]
    )
    assert not crossings, (
        "the agent and the control plane may share only "
        f"{', '.join(sorted(SHARED_BOTTOM))}:\n" + "\n".join(crossings)
    )


def test_the_shared_modules_are_at_the_bottom(graph: Graph) -> None:
    # What both sides may import must not lead to either side (nor elsewhere up the graph).
    for node in SHARED_BOTTOM:
        assert node in graph, f"{node} is listed as shared but is not in the tree"
        above = sorted(set(graph[node]) - set(SHARED_BOTTOM))
        assert not above, f"{node} is shared by agent and control plane but imports {above}"


def test_the_agent_depends_only_on_the_shared_modules(graph: Graph) -> None:
    reached = {
        target for target in graph if target != AGENT and _shortest_path(graph, AGENT, target, None)
    }
    assert reached <= set(SHARED_BOTTOM), (
        "zlh.agent reaches nodes beyond the shared bottom modules:\n"
        + "\n".join(find_paths(graph, [AGENT], sorted(reached - set(SHARED_BOTTOM))))
    )


# The checker itself, on synthetic packages: it must see what the rules are about.


def _package(tmp_path: Path, listing: str) -> Path:
    """A package ``pkg`` from ``# path`` headers each followed by that file's lines."""
    root = tmp_path / "pkg"
    files: dict[str, list[str]] = {"__init__.py": []}
    current: list[str] = []
    for line in textwrap.dedent(listing).splitlines():
        if line.startswith("# ") and line.endswith(".py"):
            current = files.setdefault(line[2:], [])
        elif line:
            current.append(line)
    for name, lines in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return root


def test_the_checker_finds_a_cycle_and_names_its_path(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        """
        # a/x.py
        from pkg.b import y
        # b/y.py
        import pkg.c
        # c.py
        def f():
            from pkg.a import x  # lazy: closes the cycle all the same
        # d.py
        from pkg import a  # outside the cycle
        """,
    )
    graph = build_graph(root, "pkg")
    assert graph["pkg.d"]["pkg.a"][0].imported == "pkg.a"
    cycles = find_cycles(graph)
    assert len(cycles) == 1
    first = cycles[0].splitlines()
    assert first[0] == "pkg.a -> pkg.b -> pkg.c -> pkg.a"
    assert "pkg/c.py:2: pkg.c imports pkg.a.x (lazy)" in cycles[0]
    assert "pkg/a/x.py:1: pkg.a imports pkg.b.y" in cycles[0]
    # An allowed lazy edge breaks it; an allowed edge does not excuse a top-level import.
    assert find_cycles(_without_allowed(graph, {("pkg.c", "pkg.a")})) == []
    assert find_cycles(_without_allowed(graph, {("pkg.a", "pkg.b")})) != []


def test_the_checker_reads_relative_and_dynamic_imports(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        """
        # a/__init__.py
        from . import inner
        # a/inner.py
        from ..b import thing
        # b.py
        import importlib
        def f():
            importlib.import_module("pkg.c")
        # c.py
        TARGET = "pkg.a.inner:main"
        LOG = "pkg.nothing"
        # d.py
        import sys
        RUN = [sys.executable, "-m", "pkg.a"]
        """,
    )
    graph = build_graph(root, "pkg")
    assert set(graph["pkg.a"]) == {"pkg.b"}
    assert set(graph["pkg.b"]) == {"pkg.c"}
    assert set(graph["pkg.c"]) == {"pkg.a"}
    assert set(graph["pkg.d"]) == set()  # runs pkg.a in another process: not an import
    assert find_cycles(graph)[0].splitlines()[0] == "pkg.a -> pkg.b -> pkg.c -> pkg.a"
    assert find_paths(graph, ["pkg.a"], ["pkg.c"])[0].splitlines()[0] == "pkg.a -> pkg.b -> pkg.c"


def test_the_checker_passes_a_layered_package(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        """
        # top.py
        import pkg.mid
        # mid.py
        from pkg import low
        # low.py
        """,
    )
    graph = build_graph(root, "pkg")
    assert find_cycles(graph) == []
    assert set(graph["pkg.top"]) == {"pkg.mid"}
    assert set(graph["pkg.mid"]) == {"pkg.low"}
