"""Reading the project's JSON input files (scenarios, topologies) with one-line errors, and
the node configs' TOML with the same rule for numbers no float holds."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Tuple, Type

from agent.errors import UsageError
from agent.ops.files import FileFault, read_text

# a generated scenario of thousands of nodes is a few MB; far beyond this is not one of ours
JSON_MAX_BYTES = 256 * 1024 * 1024
# digits of the longest integer read as a number: Python's own limit for int(text) (3.11, and
# security releases before), applied on every version
INT_MAX_DIGITS = 4300


class _HugeInt:
    """An integer of more than ``limit`` digits as read (never converted)."""

    def __init__(self, digits: int, limit: int):
        self.digits = digits
        self.limit = limit

    def problem(self) -> str:
        """What is wrong with it, for the line that names where it is."""
        return ("number too large, got an integer of %d digits (at most %d)"
                % (self.digits, self.limit))


class _OddFloat:
    """A number as written that no float holds: one ``float`` reads as 0.0 (``1e-400``) or
    as infinity (``1e400``) without a word, which a range check then reports as the wrong
    number ("got 0.0")."""

    def __init__(self, text: str, value: float):
        self.text = text
        self.value = value

    def problem(self) -> str:
        """``1e-400 is below the smallest float (5e-324)``: the number as written (cut short
        when long) and the float limit it is past."""
        text = self.text if len(self.text) <= 40 else "%s...%s (%d characters)" % (
            self.text[:20], self.text[-10:], len(self.text))
        negative = self.text.startswith("-")
        if self.value == 0.0:  # 5e-324: the smallest float above 0 (a subnormal)
            side = ("above the largest negative float (-5e-324)" if negative
                    else "below the smallest float (5e-324)")
        else:
            side = ("below the lowest float (%r)" % -sys.float_info.max if negative
                    else "above the largest float (%r)" % sys.float_info.max)
        return "%s is %s" % (text, side)


def _float_reader(odd: List[_OddFloat]) -> Callable[[str], Any]:
    """A ``parse_float`` hook: ``float(text)``, or, for a number written with digits that
    reads as 0.0 or infinity although it is neither, an ``_OddFloat`` added to ``odd``
    (TOML's ``inf`` and ``nan`` have no digits and are left to the fields' checks)."""

    def parse_float(text: str) -> Any:
        value = float(text)
        if value == 0.0:  # odd when a digit of the mantissa (before any exponent) is not 0
            odd_one = any(c in "123456789" for c in text.lower().partition("e")[0])
        else:
            odd_one = math.isinf(value) and any(c.isdigit() for c in text)
        if not odd_one:
            return value
        odd.append(_OddFloat(text, value))
        return odd[-1]

    return parse_float


def _first_fault(obj: Any, root: str, repeated: Mapping[int, Tuple[dict, str, int]]) -> str:
    """Where ``obj`` (decoded, its objects' paths from ``root``) holds a number marked as read
    (``_HugeInt``, ``_OddFloat``), said first, else a key repeated in one object (``repeated``:
    id -> (object, key, count)); "" if neither. Iterative: a deep document cannot exhaust the
    stack. A number a repeated key replaced is gone, and the repeated key is then the fault."""
    number = twice = ""
    todo = [(obj, root)]
    while todo:
        value, where = todo.pop()
        if isinstance(value, (_HugeInt, _OddFloat)) and not number:
            number = (where + ": " if where else "") + value.problem()
        if isinstance(value, dict):
            if id(value) in repeated and not twice:
                _, key, count = repeated[id(value)]
                twice = "%s: given %s" % ("%s.%s" % (where, key) if where else key,
                                          "twice" if count == 2 else "%d times" % count)
            todo.extend((v, "%s.%s" % (where, k) if where else str(k))
                        for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, "%s[%d]" % (where, i)) for i, v in enumerate(value))
    return number or twice


def loads(text: str) -> Any:
    """``json.loads``, refusing with a ``ValueError`` naming where it is (``entries[0].samples:
    ...``) an integer of more than INT_MAX_DIGITS digits (instead of Python's hint about
    ``sys.set_int_max_str_digits``), a number no float holds (``rate: 1e-400 is below the
    smallest float (5e-324)``, where Python reads 0.0, or inf for ``1e400``) and a key repeated
    in one object (``tradeoff: given twice``: JSON keeps the last silently, where a TOML reader
    refuses it)."""
    huge: List[_HugeInt] = []
    odd: List[_OddFloat] = []
    # a lower limit set for this interpreter (PYTHONINTMAXSTRDIGITS; 0: none) applies too
    limit = min(INT_MAX_DIGITS, getattr(sys, "get_int_max_str_digits", lambda: 0)()
                or INT_MAX_DIGITS)
    # objects holding a repeated key, kept alive so that no other object takes their id
    repeated: Dict[int, Tuple[dict, str, int]] = {}

    def parse_int(digits: str) -> Any:
        n = len(digits.lstrip("-"))
        if n <= limit:
            return int(digits)
        huge.append(_HugeInt(n, limit))
        return huge[-1]

    def make_object(pairs: List[Tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) < len(pairs):  # the first key seen again, and how often it is given
            seen: set = set()
            key = next(k for k, _ in pairs if k in seen or seen.add(k))
            repeated[id(obj)] = (obj, key, sum(1 for k, _ in pairs if k == key))
        return obj

    obj = json.loads(text, parse_int=parse_int, parse_float=_float_reader(odd),
                     object_pairs_hook=make_object)
    if huge or odd or repeated:  # found, then located
        fault = _first_fault(obj, "", repeated)
        if fault:
            raise ValueError(fault)
    return obj


def toml_loads(text: str, **kwargs: Any) -> Dict[str, Any]:
    """TOML ``text`` decoded: the one TOML reader (``tomllib.loads``, tomli's before Python
    3.11); its faults are ``TOMLDecodeError``s, which are ``ValueError``s. Imported when first
    used, so that reading JSON needs neither."""
    try:  # Python 3.11+
        import tomllib as toml
    except ImportError:  # pragma: no cover - Python < 3.11: tomli, the package's dependency there
        import tomli as toml  # type: ignore[no-redef]
    return toml.loads(text, **kwargs)


def load_toml(text: str, error: Callable[[str], Exception], root: str) -> Any:
    """``toml_loads(text)``, refusing as ``loads`` does a number no float holds, which TOML
    readers, too, read as 0.0 or inf without a word: ``error("ROOT.peers[0].link_rate_bytes_s:
    1e-400 is below the smallest float (5e-324)")``. The reader's own faults
    (``TOMLDecodeError``, a ``ValueError``) pass through."""
    odd: List[_OddFloat] = []
    obj = toml_loads(text, parse_float=_float_reader(odd))
    fault = _first_fault(obj, root, {}) if odd else ""
    if fault:
        raise error(fault)
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
    except ValueError as exc:  # a number too long or no float holds, a key given twice
        raise error("%s: %s" % (path, exc)) from None
    except RecursionError:
        raise error("%s: not valid JSON here (nested too deep)" % path) from None
