"""DTO-EE messages as the wire carries them: dataclass <-> msgpack-able map, type-checked.

This is the one place where a message's thresholds change key type: ``{stage: c}`` (int keys)
inside every DTO-EE module, ``{"stage": c}`` in the map sent (``thresholds_to_wire``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, get_type_hints

from agent.policies.thresholds import thresholds_from_wire, thresholds_to_wire

_FIELDS: Dict[Any, Any] = {}  # message class -> (field names, {name: type}), built once


def _fields(cls: Any) -> Any:
    # get_type_hints evaluates every (string) annotation again on each call, which cost about
    # as much as the rest of a message's handling: resolve them once per class.
    got = _FIELDS.get(cls)
    if got is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        got = _FIELDS[cls] = (names, frozenset(names), get_type_hints(cls))
    return got


def to_payload(obj: Any) -> Dict[str, Any]:
    """A DTO-EE message dataclass as a msgpack-able map (its fields are scalars and one
    ``{stage: c}`` map, copied so the message cannot change after it is queued)."""
    out = {}
    for name in _fields(type(obj))[0]:
        v = getattr(obj, name)
        out[name] = thresholds_to_wire(v) if isinstance(v, dict) else v
    return out


def from_payload(cls: Any, payload: Mapping[str, Any]) -> Any:
    """Build ``cls`` from a received map, checking every field's type; ValueError otherwise."""
    _, names, hints = _fields(cls)
    if set(payload) != names:
        raise ValueError("%s fields %s, got %s" % (cls.__name__, sorted(names), sorted(payload)))
    kw = {}
    for name in names:
        v, want = payload[name], hints[name]
        if want is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            v = float(v) if ok else v
        elif want is int:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif want is str:
            ok = isinstance(v, str)
        else:  # {stage: c}: every entry must be a valid one
            th = thresholds_from_wire(_floats(v))
            ok = isinstance(v, dict) and len(th) == len(v)
            v = th if ok else v
        if not ok:
            raise ValueError("%s.%s: bad value %r" % (cls.__name__, name, v))
        kw[name] = v
    return cls(**kw)


def _floats(v: Any) -> Any:
    """A received map with int values as floats (msgpack keeps 1.0 as a float, JSON may not)."""
    if not isinstance(v, dict):
        return v
    return {k: float(x) if isinstance(x, int) and not isinstance(x, bool) else x
            for k, x in v.items()}
