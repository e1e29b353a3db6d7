"""What ``plan`` prints for a per-task policy (DIMEE, MLCI): the policy's own fields.

Routing/threshold planners return a ``PolicyResult`` (routing, thresholds, eq. 8's delay). A
per-task policy decides per sample, so its plan is what it learned from the exit profile and
what a replay of the profile's test rows gives; each policy documents its own fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List


@dataclass(frozen=True)
class PlanReport:
    """A per-task policy's plan: ``fields`` in the order they are printed."""

    policy: str
    fields: Dict[str, Any]

    def to_json(self) -> Dict[str, Any]:
        """The ``plan --json`` object: the fields, non-finite numbers as null."""
        return _clean(self.fields)

    def text(self) -> str:
        """One ``key  value`` line per scalar, nested objects indented, lists of objects as
        one line per item."""
        return "\n".join(_lines(self.to_json(), 0))


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "%.4g" % v
    if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
        return " ".join(_fmt(x) for x in v)
    return "-" if v is None else str(v)


def _lines(obj: Dict[str, Any], depth: int) -> List[str]:
    pad = "  " * depth
    out = []
    for key, v in obj.items():
        if isinstance(v, dict):
            out.append("%s%s" % (pad, key))
            out.extend(_lines(v, depth + 1))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out.append("%s%s" % (pad, key))
            out.extend("%s  %s" % (pad, "  ".join("%s %s" % (k, _fmt(x)) for k, x in row.items()))
                       for row in v)
        else:
            out.append("%s%-16s %s" % (pad, key, _fmt(v)))
    return out
