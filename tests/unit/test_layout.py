"""The package layout holds: no import cycles, short modules, a small ``agent/`` top level, and
policies that import nothing from the runtime's I/O side.

The import graph is read from source (``ast``), module- and function-level imports alike, over
the ``agent``, ``engines`` and ``calibration`` packages.
"""

from __future__ import annotations

from tests.unit.import_graph import ROOT, find_modules, import_statements, imported_modules
from tests.unit.import_graph import cycles, project_edges

MAX_LINES = 400
AGENT_TOP_FILES = {"__init__.py", "cli.py", "__main__.py", "errors.py"}
POLICY_MAY_NOT_IMPORT = ("agent.net", "agent.node", "agent.ops", "agent.testbed", "agent.fleet",
                         "engines.loader", "engines.ort_backend", "engines.trt_backend")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_import_cycles_between_modules():
    """No two modules import each other, directly or through others (each cycle is reported
    as a path of imports with the whole group it belongs to)."""
    found = ["%s (group: %s)" % (" -> ".join(path), ", ".join(group))
             for path, group in cycles(project_edges(find_modules()))]
    assert found == []


def test_no_module_is_over_400_lines():
    """Every module of agent, engines and calibration has at most 400 lines."""
    long = {}
    for name, mod in find_modules().items():
        with open(mod.path, "rb") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[str(mod.path.relative_to(ROOT))] = n
    assert long == {}


def test_agent_top_level_holds_only_the_entry_points_and_packages():
    """agent/ holds __init__.py, cli.py, __main__.py, errors.py and folders; a folder is a
    package (has __init__.py) or data (no Python file in it)."""
    stray = []
    for path in sorted((ROOT / "agent").iterdir()):
        if path.name == "__pycache__":
            continue
        if path.is_dir():
            if not (path / "__init__.py").exists() and any(path.rglob("*.py")):
                stray.append(path.name + "/ (Python files, no __init__.py)")
        elif path.name not in AGENT_TOP_FILES:
            stray.append(path.name)
    assert stray == []


def test_policies_import_nothing_from_net_node_ops_testbed_or_engine_backends():
    """No module under agent/policies names agent.net, agent.node, agent.ops, agent.testbed,
    agent.fleet, the engine loader or a backend in an import (the transitive rule is in
    test_policy_purity)."""
    modules = find_modules()
    bad = {}
    for name, mod in sorted(modules.items()):
        if not _under(name, "agent.policies"):
            continue
        hits = sorted({"%s:%d" % (target, stmt.line)
                       for stmt in import_statements(mod)
                       for target in imported_modules(stmt, modules)
                       if any(_under(target, p) for p in POLICY_MAY_NOT_IMPORT)})
        if hits:
            bad[name] = hits
    assert bad == {}


def _imports_of_commands(package: str) -> list:
    """"module -> target:line" for each import of agent.commands (module or function level) by
    a module under ``package``."""
    modules = find_modules()
    return sorted("%s -> %s:%d" % (name, target, stmt.line)
                  for name, mod in modules.items() if _under(name, package)
                  for stmt in import_statements(mod)
                  for target in imported_modules(stmt, modules)
                  if _under(target, "agent.commands"))


def test_node_modules_import_nothing_from_the_commands_layer():
    """No module under agent/node names agent.commands in an import, at module or function
    level: the CLI faces sit above the node, which a command composes and runs."""
    assert _imports_of_commands("agent.node") == []


def test_ops_modules_import_nothing_from_the_commands_layer():
    """No module under agent/ops names agent.commands in an import, at module or function
    level: the ops layer (device paths, doctor checks, state) sits below the commands that use
    it (``install`` takes its unit files and errors from ``agent.ops.paths``)."""
    assert _imports_of_commands("agent.ops") == []
