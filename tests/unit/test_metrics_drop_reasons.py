"""Every drop reason the agent's code gives is among those its metrics serve at 0 from start-up
(``agent.ops.metrics.DROP_REASONS``, ``WORKER_DROPS``, ``SOURCE_DROPS``): a reason missing there
would again appear only at its first count, which ``rate()`` and ``increase()`` never count.

The reasons are read from source (``ast``): the string literals in the first argument of each
``drop``, ``reject`` and ``WireError`` call and in ``Done(reason=...)`` under ``agent/``.
"""

from __future__ import annotations

import ast
from typing import Dict, Set

from agent.node.steps import Step
from agent.ops.metrics import DROP_REASONS, SOURCE_DROPS, WORKER_DROPS
from tests.unit.import_graph import ROOT


def _reasons_by_file() -> Dict[str, Set[str]]:
    """{path under the repository: drop reasons given there as string literals}."""
    out: Dict[str, Set[str]] = {}
    for path in sorted((ROOT / "agent").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("drop", "reject", "WireError") and node.args:
                args = [node.args[0]]
            elif name == "Done":
                args = [k.value for k in node.keywords if k.arg == "reason"]
            else:
                continue
            for a in args:  # literals inside `x if c else y` and `a or b` too
                for c in ast.walk(a):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        out.setdefault(str(path.relative_to(ROOT)), set()).add(c.value)
    return out


def test_every_drop_reason_in_the_code_is_served_at_zero_for_the_role_that_gives_it():
    """Rule: a reason given in the source's modules is in DROP_REASONS or SOURCE_DROPS, one
    given in a worker's (worker*, inference) in DROP_REASONS or WORKER_DROPS, any other in
    DROP_REASONS (every agent runs the loop, the outbox and the wire decoder)."""
    found = _reasons_by_file()
    assert found, "no drop reason found: the scan reads nothing"
    missing = {}
    for path, reasons in found.items():
        name = path.rsplit("/", 1)[-1]
        if name == "source.py":
            known = set(DROP_REASONS + SOURCE_DROPS)
        elif name.startswith("worker") or name == "inference.py":
            known = set(DROP_REASONS + WORKER_DROPS)
        else:
            known = set(DROP_REASONS)
        if reasons - known:
            missing[path] = sorted(reasons - known)
    assert missing == {}


def test_a_workers_no_output_drop_is_among_its_reasons():
    """Rule: the drop a worker counts with nothing to answer or forward (``Step.DROP``, not a
    literal at its call) is served at 0 too."""
    assert Step.DROP.value in WORKER_DROPS
