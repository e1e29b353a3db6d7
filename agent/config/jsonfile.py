"""Reading the project's JSON input files (scenarios, topologies) with one-line errors."""

from __future__ import annotations

import json
import os
from typing import Any, Type

from agent.errors import UsageError
from agent.ops.files import FileFault, read_text

# a generated scenario of thousands of nodes is a few MB; far beyond this is not one of ours
JSON_MAX_BYTES = 256 * 1024 * 1024


def read_json_file(path: str, error: Type[UsageError], what: str) -> Any:
    """Decode ``path``; anything but a readable regular file of UTF-8 JSON (missing, a
    directory or FIFO, binary, bad or too deeply nested JSON) raises ``error`` naming the file
    and what is wrong, never blocking on a FIFO."""
    if not os.path.lexists(path):
        raise error("%s: no such %s file" % (path, what))
    try:
        text = read_text(path, what, JSON_MAX_BYTES)
    except FileFault as exc:
        raise error(str(exc)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error("%s: not valid JSON (line %d, column %d: %s)"
                    % (path, exc.lineno, exc.colno, exc.msg)) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise error("%s: not valid JSON here (%s)" % (path, str(exc).split("; use sys.")[0])) from None
    except RecursionError:
        raise error("%s: not valid JSON here (nested too deep)" % path) from None
