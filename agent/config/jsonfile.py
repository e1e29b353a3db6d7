"""Reading the project's JSON input files (scenarios, topologies) with one-line errors."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Tuple, Type

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
    """``json.loads``, refusing with a ``ValueError`` naming where it is (``entries[0].samples:
    ...``) an integer of more than INT_MAX_DIGITS digits (instead of Python's hint about
    ``sys.set_int_max_str_digits``) and a key repeated in one object (``tradeoff: given
    twice``: JSON keeps the last silently, where a TOML reader refuses it)."""
    huge: List[_HugeInt] = []
    # a lower limit set for this interpreter (PYTHONINTMAXSTRDIGITS; 0: none) applies too
    limit = min(INT_MAX_DIGITS, getattr(sys, "get_int_max_str_digits", lambda: 0)()
                or INT_MAX_DIGITS)
    # objects holding a repeated key, kept alive so that no other object takes their id
    repeated: Dict[int, Tuple[dict, str, int]] = {}

    def parse_int(digits: str) -> Any:
        n = len(digits.lstrip("-"))
        if n <= limit:
            return int(digits)
        huge.append(_HugeInt(n))
        return huge[-1]

    def make_object(pairs: List[Tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) < len(pairs):  # the first key seen again, and how often it is given
            seen: set = set()
            key = next(k for k, _ in pairs if k in seen or seen.add(k))
            repeated[id(obj)] = (obj, key, sum(1 for k, _ in pairs if k == key))
        return obj

    obj = json.loads(text, parse_int=parse_int, object_pairs_hook=make_object)
    if huge or repeated:  # found, then located (iteratively: a deep document cannot exhaust
        # the stack). A long integer is reported first; one a repeated key replaced is gone,
        # and the repeated key is then the error.
        too_large = twice = ""
        todo = [(obj, "")]
        while todo:
            value, where = todo.pop()
            if isinstance(value, _HugeInt) and not too_large:
                too_large = ("%snumber too large, got an integer of %d digits (at most %d)"
                             % (where + ": " if where else "", value.digits, limit))
            if isinstance(value, dict):
                if id(value) in repeated and not twice:
                    _, key, count = repeated[id(value)]
                    twice = "%s: given %s" % ("%s.%s" % (where, key) if where else key,
                                              "twice" if count == 2 else "%d times" % count)
                todo.extend((v, "%s.%s" % (where, k) if where else str(k))
                            for k, v in value.items())
            elif isinstance(value, list):
                todo.extend((v, "%s[%d]" % (where, i)) for i, v in enumerate(value))
        if too_large or twice:
            raise ValueError(too_large or twice)
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
