"""How many tasks each source of a rate cut short has created so far.

A rate cut short (Ctrl-C, an agent's death) ends before its sources reach the ``max_tasks``
they were given: counting that plan as created would report tasks never made as lost. What a
source made is in its state folder: a final line in ``records.jsonl`` per task whose fate is
known, a ``+`` line in ``records.jsonl.journal`` per task as it is created (the journal may be
compacted to the open tasks, so only the two together name every task), and ``tasks.created``
in ``stats.json`` as of its last rewrite.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Set

from agent.node.records import JOURNAL_SUFFIX
from agent.ops.state import STATS_FILE


def _ids(path: str, prefix: bytes) -> Set[str]:
    """Task ids of the whole JSON lines of a file (after ``prefix``); unreadable lines and a
    missing file give none: the count is a floor, never an error."""
    out: Set[str] = set()
    try:
        with open(path, "rb") as f:
            for raw in f:
                if not raw.startswith(prefix) or not raw.endswith(b"\n"):
                    continue
                try:
                    obj = json.loads(raw[len(prefix):].decode("utf-8"))
                except ValueError:
                    continue
                if isinstance(obj, dict) and "id" in obj:
                    out.add(str(obj["id"]))
    except OSError:
        pass
    return out


def _stats_created(path: str) -> int:
    try:
        with open(path, "r", encoding="utf-8") as f:
            n = (json.load(f).get("tasks") or {}).get("created")
    except (OSError, ValueError, AttributeError):
        return 0
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


def created_so_far(records: Mapping[str, str], planned: Mapping[str, int]) -> Dict[str, int]:
    """{source: tasks it created}, from the files next to each source's ``records`` path, at
    most its ``planned`` count (a source stops there)."""
    out = {}
    for s, path in records.items():
        ids = _ids(path, b"") | _ids(path + JOURNAL_SUFFIX, b"+")
        stats = _stats_created(os.path.join(os.path.dirname(path), STATS_FILE))
        out[s] = min(max(len(ids), stats), int(planned.get(s, 0)))
    return out
