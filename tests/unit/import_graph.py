"""The project's import graph, read from source with ``ast``: no module is imported or run.

Shared by the layout and policy-purity tests. Every ``import`` statement counts, at module level
or inside a function: a function-level import runs as soon as the function is called, so it is
as much a dependency as one at the top of the file.
"""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "engines", "calibration")


@dataclass(frozen=True)
class Module:
    """One ``.py`` file of a package: its dotted name and path."""

    name: str
    path: pathlib.Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class ImportStmt:
    """One imported name as written (absolute, dotted), with its line."""

    name: str
    line: int
    from_names: Tuple[str, ...] = ()  # ``from X import a, b``: a and b


def find_modules(root: pathlib.Path = ROOT, packages: Iterable[str] = PACKAGES
                 ) -> Dict[str, Module]:
    """Every module of the packages under ``root`` by dotted name (folders without
    ``__init__.py`` are data, not packages, and are skipped with everything below them)."""
    out: Dict[str, Module] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            folders = rel.parts[:-1]
            if not all((root.joinpath(*folders[:i + 1]) / "__init__.py").exists()
                       for i in range(len(folders))):
                continue
            parts = list(folders) if path.name == "__init__.py" else list(folders) + [path.stem]
            out[".".join(parts)] = Module(".".join(parts), path)
    return out


def _absolute(mod: Module, level: int, target: Optional[str]) -> str:
    """The absolute name of a relative ``from`` import in ``mod``."""
    base = mod.name.split(".")
    if not mod.is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def import_statements(mod: Module) -> List[ImportStmt]:
    """Every import in ``mod``'s source (module and function level), as absolute names."""
    tree = ast.parse(mod.path.read_text(encoding="utf-8"), filename=str(mod.path))
    out: List[ImportStmt] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [ImportStmt(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                name = _absolute(mod, node.level, node.module)
            out.append(ImportStmt(name, node.lineno, tuple(a.name for a in node.names)))
    return out


def imported_modules(stmt: ImportStmt, modules: Dict[str, Module]) -> Set[str]:
    """The names one statement imports: ``from X import a`` names ``X.a`` when that is a
    module of the project, ``X`` itself otherwise (an attribute of X's ``__init__``)."""
    names = set()
    for a in stmt.from_names:
        sub = stmt.name + "." + a
        names.add(sub if sub in modules else stmt.name)
    return names or {stmt.name}


def project_edges(modules: Dict[str, Module]) -> Dict[str, Dict[str, int]]:
    """module -> {project module it imports: first line}; explicit imports only."""
    graph: Dict[str, Dict[str, int]] = {}
    for name, mod in modules.items():
        edges: Dict[str, int] = {}
        for stmt in import_statements(mod):
            for target in imported_modules(stmt, modules):
                if target in modules and target != name:
                    edges.setdefault(target, stmt.line)
        graph[name] = edges
    return graph


def _parents(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def chain(start: str, end: str, importer: Dict[str, str]) -> List[str]:
    """The import path from ``start`` to ``end`` recorded by ``reached``."""
    path = [end]
    while path[-1] != start:
        path.append(importer[path[-1]])
    return path[::-1]


def reached(start: str, modules: Dict[str, Module]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """What importing ``start`` can run: (project modules, outside modules), each mapped to
    the project module that imports it.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so the parent
    packages of every reached module are reached too.
    """
    inside: Dict[str, str] = {start: start}
    outside: Dict[str, str] = {}
    todo = [start]
    while todo:
        cur = todo.pop()
        for stmt in import_statements(modules[cur]):
            for target in imported_modules(stmt, modules):
                for name in _parents(target) + [target]:
                    if name in modules:
                        if name not in inside:
                            inside[name] = cur
                            todo.append(name)
                    elif name.split(".")[0] not in PACKAGES:
                        outside.setdefault(name, cur)
        for name in _parents(cur):
            if name in modules and name not in inside:
                inside[name] = cur
                todo.append(name)
    return inside, outside


def cycles(graph: Dict[str, Dict[str, int]]) -> List[Tuple[List[str], List[str]]]:
    """Every import cycle: (a closed path ``[a, b, ..., a]`` along real edges, every module of
    its strongly connected group), by Tarjan's algorithm (iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Tuple[List[str], List[str]]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    groups.append((_closed_path(sorted(group), graph), sorted(group)))
    return groups


def _closed_path(group: List[str], graph: Dict[str, Dict[str, int]]) -> List[str]:
    """A shortest cycle through the group's first module, by breadth-first search."""
    members = set(group)
    start = group[0]
    prev: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if nxt not in prev:
                    prev[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return group
