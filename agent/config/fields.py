"""The one typed-field reader behind every input file and knob table.

Node configs (TOML), scenarios and topologies (JSON) and policy knobs all arrive as nested
mappings of plain values. ``Fields`` reads one mapping: each accessor checks a field's type and
range and raises the caller's error class with a one-line message that names the field by its
full path (``where.key``) and the value received, e.g.::

    policy_knobs.step: must be one of default|paper, got 'papr'

``where`` is the path of the mapping itself ("policy_knobs", "workers[2]", "scenario.stages[0]"),
so a message always says where in the file to look. ``reject_unknown`` turns a typo into an
error instead of a silently ignored key. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import math
import os
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Type

from agent.config.checks import short
from agent.errors import UsageError

REQUIRED: Any = object()  # default that makes a field mandatory


class Fields:
    """Typed access to one mapping; errors are ``error(message)`` naming ``where.key``."""

    def __init__(self, obj: Any, where: str, error: Type[Exception] = UsageError):
        if not isinstance(obj, Mapping):
            raise error("%s: must be a table/object, got %r" % (where, obj))
        self.obj = obj
        self.where = where
        self.error = error

    # -- plumbing ------------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """Full path of field ``key`` (for messages)."""
        return "%s.%s" % (self.where, key) if self.where else key

    def fail(self, key: str, what: str) -> Exception:
        """The error for field ``key``: ``where.key: <what>, got <value>``."""
        value = self.obj.get(key)
        shown = short(value, 80) if isinstance(value, int) and not isinstance(value, bool) \
            else repr(value)  # a 400-digit integer stays one readable line
        return self.error("%s: %s, got %s" % (self.path(key), what, shown))

    def _get(self, key: str, default: Any) -> Any:
        if key in self.obj:
            return self.obj[key]
        if default is REQUIRED:
            raise self.error("%s: missing" % self.path(key))
        return default

    def value(self, key: str, default: Any = REQUIRED) -> Any:
        """The raw value of ``key`` (missing and required: an error), for checks of its own."""
        return self._get(key, default)

    def has(self, key: str) -> bool:
        """Whether the mapping holds ``key``."""
        return key in self.obj

    def reject_unknown(self, allowed: Iterable[str]) -> None:
        """Raise for the first key not in ``allowed``, suggesting the closest allowed name."""
        allowed = list(allowed)
        for key in sorted(set(self.obj) - set(allowed)):
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = " (did you mean %r?)" % close[0] if close else ""
            raise self.error("%s: unknown field%s; known: %s"
                             % (self.path(str(key)), hint, ", ".join(sorted(allowed)) or "none"))

    def refuse_fixed(self, fixed: Mapping[str, Any], by: str, instead: str) -> None:
        """Raise for a key of ``fixed`` given another value than the one it holds there: ``by``
        (a policy variant) fixes those knobs itself, so another value would be replaced, not
        used; ``instead`` is the policy that takes them. The value it fixes is accepted."""
        for key in sorted(fixed):
            want = fixed[key]
            if key in self.obj and not (isinstance(self.obj[key], bool) == isinstance(want, bool)
                                        and self.obj[key] == want):
                raise self.fail(key, '%s fixes it at %s (use policy "%s" to set it)'
                                % (by, _plain(want), instead))

    # -- scalars -------------------------------------------------------------------------------

    def num(self, key: str, default: Any = REQUIRED, lo: Optional[float] = None,
            hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = False) -> float:
        """A finite number (ints accepted, bools not) within [lo, hi] (open ends if asked)."""
        v = self._get(key, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not is_finite(v):
            raise self.fail(key, "must be a finite number")
        if (lo is not None and (v <= lo if lo_open else v < lo)) or (
                hi is not None and (v >= hi if hi_open else v > hi)):
            raise self.fail(key, "must be %s" % _range_text(lo, hi, lo_open, hi_open))
        return float(v)

    def int(self, key: str, default: Any = REQUIRED, lo: Optional[int] = None,
            hi: Optional[int] = None) -> int:
        """An integer (bools not) within [lo, hi]."""
        v = self._get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, "must be an integer" + (
                " " + _range_text(lo, hi, False, False) if lo is not None or hi is not None else ""))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(key, "must be an integer " + _range_text(lo, hi, False, False))
        return v

    def str(self, key: str, default: Any = REQUIRED, choices: Optional[Sequence[str]] = None,
            non_empty: bool = False) -> str:
        """A string (not "" when ``non_empty``), one of ``choices`` when given."""
        v = self._get(key, default)
        if not isinstance(v, str) or (non_empty and not v):
            raise self.fail(key, "must be a non-empty string" if non_empty else "must be a string")
        if choices is not None and v not in choices:
            raise self.fail(key, "must be one of %s" % "|".join(choices))
        return v

    def bool(self, key: str, default: Any = REQUIRED) -> bool:
        """true or false (no 0/1, no strings)."""
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, "must be true or false")
        return v

    def file_path(self, key: str, base_dir: str, default: Any = REQUIRED,
                  as_given: Optional[Callable[[str], bool]] = None) -> str:
        """A path string resolved against ``base_dir`` (``~`` expanded); "" stays "". A value
        ``as_given`` accepts is joined to ``base_dir`` without being normalised (a key given
        where a key file belongs: a check later must see its characters whole)."""
        v = self.str(key, default)
        if v == "":
            return ""
        if as_given is not None and as_given(v):
            return os.path.join(base_dir, v)
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(v)))

    # -- containers ----------------------------------------------------------------------------

    def table(self, key: str, default: Any = REQUIRED, shape: str = "a table/object") -> "Fields":
        """The nested mapping at ``key`` as a reader of its own (``where.key``).

        ``shape`` is what the error says the field must be, e.g. "an object {stage: threshold}".
        """
        v = self._get(key, default)
        if not isinstance(v, Mapping):
            raise self.fail(key, "must be " + shape)
        return Fields(v, self.path(key), self.error)

    def list(self, key: str, default: Any = REQUIRED, min_len: int = 0) -> List[Any]:
        """A list with at least ``min_len`` items."""
        v = self._get(key, default)
        if not isinstance(v, list):
            raise self.fail(key, "must be a list")
        if len(v) < min_len:
            raise self.fail(key, "must list at least %d item%s" % (min_len, "" if min_len == 1 else "s"))
        return v

    def tables(self, key: str, default: Any = REQUIRED, min_len: int = 0,
               known: Optional[Iterable[str]] = None) -> List["Fields"]:
        """A list of mappings, each as a reader named ``where.key[i]``; with ``known``, each
        item's other fields are rejected (``reject_unknown``)."""
        items = [Fields(item, "%s[%d]" % (self.path(key), i), self.error)
                 for i, item in enumerate(self.list(key, default, min_len))]
        if known is not None:
            known = tuple(known)
            for item in items:
                item.reject_unknown(known)
        return items


def is_finite(value: Any) -> bool:
    """True for a number a float can hold: not NaN or infinite, and not an integer too large
    to convert (``math.isfinite(10**400)`` raises ``OverflowError``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _plain(value: Any) -> str:
    """``value`` as a config file spells it: true/false, a number without a trailing .0."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _fmt(value) if isinstance(value, (int, float)) else repr(value)


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return "in %s%s, %s%s" % ("(" if lo_open else "[", _fmt(lo), _fmt(hi), ")" if hi_open else "]")
    if lo is not None:
        return "%s %s" % (">" if lo_open else ">=", _fmt(lo))
    return "%s %s" % ("<" if hi_open else "<=", _fmt(hi))


def _fmt(v: float) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # an integer bound in full (1073741824, not 1.07374e+09)
    return repr(v) if isinstance(v, float) and not float(v).is_integer() else "%g" % v
