"""Reading the project's JSON input files (scenarios, topologies) with one-line errors."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List, Type

from agent.errors import UsageError
from agent.ops.files import FileFault, read_text

# a generated scenario of thousands of nodes is a few MB; far beyond this is not one of ours
JSON_MAX_BYTES = 256 * 1024 * 1024
# digits of the longest integer read as a number: Python's own limit for int(text) (3.11, and
# security releases before), applied on every version
INT_MAX_DIGITS = 4300


class _HugeInt:
    """An integer of more than INT_MAX_DIGITS digits as read (never converted)."""

    def __init__(self, digits: int):
        self.digits = digits


def loads(text: str) -> Any:
    """``json.loads``, refusing an integer of more than INT_MAX_DIGITS digits with a
    ``ValueError`` naming where it is (``entries[0].samples: number too large, ...``) instead
    of Python's hint about ``sys.set_int_max_str_digits``."""
    huge: List[_HugeInt] = []
    # a lower limit set for this interpreter (PYTHONINTMAXSTRDIGITS; 0: none) applies too
    limit = min(INT_MAX_DIGITS, getattr(sys, "get_int_max_str_digits", lambda: 0)()
                or INT_MAX_DIGITS)

    def parse_int(digits: str) -> Any:
        n = len(digits.lstrip("-"))
        if n <= limit:
            return int(digits)
        huge.append(_HugeInt(n))
        return huge[-1]

    obj = json.loads(text, parse_int=parse_int)
    if huge:  # found, then located (iteratively: a deep document cannot exhaust the stack)
        todo = [(obj, "")]
        while todo:
            value, where = todo.pop()
            if isinstance(value, _HugeInt):  # (one a repeated key replaced may be gone)
                raise ValueError("%snumber too large, got an integer of %d digits (at most %d)"
                                 % (where + ": " if where else "", value.digits, limit))
            if isinstance(value, dict):
                todo.extend((v, "%s.%s" % (where, k) if where else str(k))
                            for k, v in value.items())
            elif isinstance(value, list):
                todo.extend((v, "%s[%d]" % (where, i)) for i, v in enumerate(value))
    return obj


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
        return loads(text)
    except json.JSONDecodeError as exc:
        raise error("%s: not valid JSON (line %d, column %d: %s)"
                    % (path, exc.lineno, exc.colno, exc.msg)) from None
    except ValueError as exc:  # an integer of more digits than any field holds
        raise error("%s: %s" % (path, exc)) from None
    except RecursionError:
        raise error("%s: not valid JSON here (nested too deep)" % path) from None
