"""DTO-EE messages as the wire carries them: dataclass <-> msgpack-able map, type-checked.

This is the one place where a message's thresholds change key type: ``{stage: c}`` (int keys)
inside every DTO-EE module, ``{"stage": c}`` in the map sent (``thresholds_to_wire``), and where
a received message is checked: types and magnitudes for every field here, then the ranges its
class needs (``protocol.check_request`` / ``check_status``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, get_type_hints

from agent.policies.dtoee import protocol as D
from agent.policies.thresholds import thresholds_from_wire, thresholds_to_wire
# the wire's bound on every integer (rounds, quiet streaks, versions): a node adding 1 to an
# adopted version can still send it
from agent.protocol.wire import MAX_INT

# Largest magnitude of a float in a message: far above any FLOP/s, bytes/s, rate or delay, and
# low enough that sums and products of a few such values stay finite.
MAX_ABS = 1e30
# per-class range checks, run on every message built here (one home per message class)
_CHECKS = {D.Request: D.check_request, D.Status: D.check_status}
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
    """A DTO-EE message dataclass as a msgpack-able map (its fields are scalars, ``{stage: c}``
    maps and ``{node id: number}`` maps, copied so the message cannot change after it is
    queued; floats clamped to ``MAX_ABS``, see ``_clamp``)."""
    out = {}
    for name, kind in _kinds(type(obj)):
        v = getattr(obj, name)
        if kind == 0:
            v = _clamp(v)
        elif kind == 4:
            v = {k: _clamp(x) for k, x in v.items()}
        out[name] = thresholds_to_wire(v) if kind == 3 else v
    return out


def _clamp(v: Any) -> Any:
    """A float to send, within ``MAX_ABS``: extreme but accepted inputs (a peer's capacity of 1
    FLOP/s, a load of 1e30) may make this node's own Omega, curvature or load larger still, and
    its peers refusing every message of it would stall their rounds too. Past 1e30 s or FLOP/s
    the value only says "as bad as it gets", which the bound says as well. NaN is sent as is
    (refused: it says nothing)."""
    if -MAX_ABS <= v <= MAX_ABS or v != v:
        return v
    return MAX_ABS if v > 0 else -MAX_ABS


def _kinds(cls: Any) -> Any:
    # (name, kind) per field, kind 0 float, 1 int, 2 str, 3 {stage: c}, 4 {node id: float}:
    # resolved once per class
    got = _KINDS.get(cls)
    if got is None:
        hints = _fields(cls)[2]
        got = _KINDS[cls] = tuple(
            (n, {float: 0, int: 1, str: 2}.get(hints[n], 4 if hints[n] == Dict[str, float]
                                               else 3))
            for n in _fields(cls)[0])
    return got


_KINDS: Dict[Any, Any] = {}


def from_payload(cls: Any, payload: Mapping[str, Any]) -> Any:
    """Build ``cls`` from a received map, checking every field's type, that numbers are finite
    and within ``MAX_ABS`` (floats) or ``[0, MAX_INT)`` (ints), and the class's own ranges
    (``_CHECKS``); ValueError otherwise."""
    names = _fields(cls)[1]
    if payload.keys() != names:
        # repr: a map may mix text and bytes keys, which do not sort together
        raise ValueError("%s fields %s, got %s" % (cls.__name__, sorted(names),
                                                   sorted(map(repr, payload))))
    kw = {}
    for name, kind in _kinds(cls):
        v = payload[name]
        t = type(v)
        if kind == 0:
            # exact types first (what msgpack gives); bools are no numbers; the bound fails for
            # nan and inf too
            ok = (t is float or t is int or (isinstance(v, (int, float)) and t is not bool)) \
                and -MAX_ABS <= v <= MAX_ABS
            v = float(v) if ok else v
        elif kind == 1:
            ok = (t is int or (isinstance(v, int) and t is not bool)) and 0 <= v < MAX_INT
        elif kind == 2:
            ok = isinstance(v, str)
        elif kind == 4:  # {node id: finite number}
            ok = isinstance(v, dict) and all(
                isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool)
                and -MAX_ABS <= x <= MAX_ABS for k, x in v.items())
            v = {k: float(x) for k, x in v.items()} if ok else v
        else:  # {stage: c}: every entry must be a valid one
            th = thresholds_from_wire(_floats(v))
            ok = isinstance(v, dict) and len(th) == len(v)
            v = th if ok else v
        if not ok:
            raise ValueError("%s.%s: bad value %r" % (cls.__name__, name, v))
        kw[name] = v
    check = _CHECKS.get(cls)
    return cls(**kw) if check is None else check(cls(**kw))


def _floats(v: Any) -> Any:
    """A received map with int values as floats (msgpack keeps 1.0 as a float, JSON may not)."""
    if not isinstance(v, dict):
        return v
    return {k: float(x) if isinstance(x, int) and not isinstance(x, bool) else x
            for k, x in v.items()}
