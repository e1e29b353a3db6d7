"""Reading the project's JSON input files (scenarios, topologies) with one-line errors."""

from __future__ import annotations

import json
from typing import Any, Type

from agent.errors import UsageError


def read_json_file(path: str, error: Type[UsageError], what: str) -> Any:
    """Decode ``path``; a missing file or bad JSON raises ``error`` naming the file and spot."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error("%s: no such %s file" % (path, what))
    except json.JSONDecodeError as exc:
        raise error("%s: not valid JSON (line %d, column %d: %s)"
                    % (path, exc.lineno, exc.colno, exc.msg))
