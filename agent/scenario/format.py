"""Scenario files (JSON, SI units) for ``plan`` and ``simulate``: parsing, validation, writing.

Parsing is separate from reading: ``parse_scenario(obj, base_dir)`` validates a decoded JSON
object, ``load_scenario(path)`` reads the file and calls it. Every error names the field, e.g.
``workers[2].stage: must be an integer in 1..4, got 0``. ``scenario_to_json`` is the inverse of
``parse_scenario`` and ``save_scenario`` writes a file (plus its exit profile) that
``load_scenario`` reads back unchanged.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.policies.setting import Link, Scenario, ScenarioError, Source, Stage, Worker
from engines.exit_profile import load_exit_profile, save_exit_profile


def _num(obj: Mapping, key: str, where: str, positive: bool = True, lo=None, hi=None) -> float:
    if key not in obj:
        raise ScenarioError("%s.%s: missing" % (where, key))
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ScenarioError("%s.%s: must be a finite number, got %r" % (where, key, v))
    if positive and v <= 0:
        raise ScenarioError("%s.%s: must be > 0, got %r" % (where, key, v))
    if lo is not None and v < lo or hi is not None and v > hi:
        raise ScenarioError("%s.%s: must be in [%s, %s], got %r" % (where, key, lo, hi, v))
    return float(v)


def _list(obj: Mapping, key: str, min_len: int = 1) -> List[Any]:
    v = obj.get(key)
    if not isinstance(v, list) or len(v) < min_len:
        raise ScenarioError("%s: must be a list with at least %d entr%s"
                            % (key, min_len, "y" if min_len == 1 else "ies"))
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise ScenarioError("%s[%d]: must be an object, got %r" % (key, i, item))
    return v


def _id(item: Mapping, where: str, seen: set) -> str:
    v = item.get("id")
    if not isinstance(v, str) or not v:
        raise ScenarioError("%s.id: must be a non-empty string, got %r" % (where, v))
    if v in seen:
        raise ScenarioError("%s.id: duplicate node id %r" % (where, v))
    seen.add(v)
    return v


def _power_modes(item: Mapping, where: str) -> Tuple[Tuple[str, float], ...]:
    modes = item.get("power_modes", {})
    if not isinstance(modes, dict):
        raise ScenarioError("%s.power_modes: must be an object {mode name: capacity FLOP/s}, got %r"
                            % (where, modes))
    return tuple((str(name), _num(modes, name, where + ".power_modes")) for name in modes)


def _device(item: Mapping, where: str) -> str:
    v = item.get("device", "")
    if not isinstance(v, str):
        raise ScenarioError("%s.device: must be a string (a device id), got %r" % (where, v))
    return v


def _check_shared_device(workers: List[Worker], where: str) -> None:
    """Stages held by one device share its processor: one capacity, each stage once."""
    new = workers[-1]
    for w in workers[:-1]:
        if (w.device or w.id) != (new.device or new.id):
            continue
        if w.stage == new.stage:
            raise ScenarioError("%s.device: %r already serves stage %d (worker %r)"
                                % (where, new.device, w.stage, w.id))
        if w.capacity != new.capacity or w.power_modes != new.power_modes:
            raise ScenarioError("%s.capacity: workers on device %r share one processor, so "
                                "capacity and power_modes must equal those of %r"
                                % (where, new.device, w.id))


KNOWN_KEYS = {"stages", "remaining", "exit_profile", "sources", "workers", "links", "tradeoff",
              "knobs", "comment", "synthetic"}


def parse_scenario(obj: Any, base_dir: str = ".") -> Scenario:
    """Validate a decoded scenario object; ``exit_profile`` paths are relative to ``base_dir``."""
    if not isinstance(obj, dict):
        raise ScenarioError("scenario: top level must be a JSON object")
    unknown = sorted(set(obj) - KNOWN_KEYS)
    if unknown:
        raise ScenarioError("scenario: unknown field(s) %s (known: %s)"
                            % (unknown, sorted(KNOWN_KEYS)))
    stages = []
    for i, s in enumerate(_list(obj, "stages")):
        w = "stages[%d]" % i
        ex = s.get("exit", False)
        if not isinstance(ex, bool):
            raise ScenarioError("%s.exit: must be true or false, got %r" % (w, ex))
        stages.append(Stage(_num(s, "flops", w), _num(s, "input_bytes", w), ex))
    h = len(stages)

    seen: set = set()
    sources = [Source(_id(s, "sources[%d]" % i, seen), _num(s, "rate", "sources[%d]" % i),
                      _device(s, "sources[%d]" % i)) for i, s in enumerate(_list(obj, "sources"))]
    workers = []
    for i, s in enumerate(_list(obj, "workers")):
        w = "workers[%d]" % i
        wid = _id(s, w, seen)
        st = s.get("stage")
        if isinstance(st, bool) or not isinstance(st, int) or not 1 <= st <= h:
            raise ScenarioError("%s.stage: must be an integer in 1..%d, got %r" % (w, h, st))
        workers.append(Worker(wid, st, _num(s, "capacity", w), _power_modes(s, w),
                              _device(s, w)))
        _check_shared_device(workers, w)
    stage_of = {s.id: 0 for s in sources}
    stage_of.update({w.id: w.stage for w in workers})
    for st in range(1, h + 1):
        if not any(w.stage == st for w in workers):
            raise ScenarioError("workers: no worker serves stage %d" % st)

    links = []
    pairs = set()
    for i, l in enumerate(_list(obj, "links")):
        w = "links[%d]" % i
        a, b = l.get("from"), l.get("to")
        for key, v in (("from", a), ("to", b)):
            if v not in stage_of:
                raise ScenarioError("%s.%s: unknown node %r" % (w, key, v))
        if stage_of[b] != stage_of[a] + 1:
            raise ScenarioError("%s: links go from stage h to h+1, but %r is stage %d and %r is "
                                "stage %d" % (w, a, stage_of[a], b, stage_of[b]))
        if (a, b) in pairs:
            raise ScenarioError("%s: duplicate link %s -> %s" % (w, a, b))
        pairs.add((a, b))
        links.append(Link(a, b, _num(l, "rate", w)))
    for node, st in stage_of.items():
        if st < h and not any(l.src == node for l in links):
            raise ScenarioError("links: %r (stage %d) has no link to stage %d" % (node, st, st + 1))

    tradeoff = _num(obj, "tradeoff", "scenario", positive=False, lo=0.0, hi=1.0) \
        if "tradeoff" in obj else 0.5

    remaining = profile = None
    has_rem, has_prof = "remaining" in obj, "exit_profile" in obj
    if has_rem == has_prof:
        raise ScenarioError("scenario: give exactly one of 'remaining' (fixed thresholds) or "
                            "'exit_profile' (tuned thresholds)")
    if has_rem:
        rem = obj["remaining"]
        if not isinstance(rem, list) or len(rem) != h:
            raise ScenarioError("remaining: must be a list of %d numbers (one per stage)" % h)
        for i, v in enumerate(rem):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ScenarioError("remaining[%d]: must be a number in [0, 1], got %r" % (i, v))
            if not stages[i].exit and v != 1.0:
                raise ScenarioError("remaining[%d]: stage %d has no exit, so it must be 1.0, got %r"
                                    % (i, i + 1, v))
        remaining = tuple(float(v) for v in rem)
    else:
        p = obj["exit_profile"]
        if not isinstance(p, str):
            raise ScenarioError("exit_profile: must be a path string, got %r" % (p,))
        try:
            profile = load_exit_profile(os.path.join(base_dir, p))
        except UsageError as exc:
            raise ScenarioError("exit_profile: %s" % exc)
        want = tuple(i + 1 for i, s in enumerate(stages) if s.exit) + (h,)
        if profile.exit_stages != want:
            raise ScenarioError("exit_profile: heads at stages %s, but the scenario's exits "
                                "(plus the final stage) are %s" % (profile.exit_stages, want))
    knobs = obj.get("knobs", {})
    if not isinstance(knobs, dict):
        raise ScenarioError("knobs: must be an object, got %r" % (knobs,))
    comment = obj.get("comment", "")
    if not isinstance(comment, str):
        raise ScenarioError("comment: must be a string, got %r" % (comment,))
    synthetic = obj.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise ScenarioError("synthetic: must be true or false, got %r" % (synthetic,))
    return Scenario(tuple(stages), tuple(sources), tuple(workers), tuple(links), tradeoff,
                    remaining, profile, dict(knobs), comment, synthetic)


def load_scenario(path: str) -> Scenario:
    """Read and validate a scenario JSON file."""
    obj = read_json_file(path, ScenarioError, "scenario")
    return parse_scenario(obj, os.path.dirname(os.path.abspath(path)))


def scenario_to_json(scenario: Scenario, exit_profile_path: Optional[str] = None) -> Dict[str, Any]:
    """The JSON object for ``scenario`` (inverse of ``parse_scenario``).

    A scenario with an exit profile needs ``exit_profile_path``: the path written into the file
    (relative to the scenario file's folder); the profile itself is saved by ``save_scenario``.
    """
    obj: Dict[str, Any] = {}
    if scenario.comment:
        obj["comment"] = scenario.comment
    if scenario.synthetic:
        obj["synthetic"] = True
    obj["stages"] = [{"flops": s.flops, "input_bytes": s.input_bytes, "exit": s.exit}
                     for s in scenario.stages]
    if scenario.exit_profile is not None:
        if not exit_profile_path:
            raise ScenarioError("exit_profile: a scenario with an exit profile needs a path to "
                                "write it to")
        obj["exit_profile"] = exit_profile_path
    else:
        obj["remaining"] = list(scenario.remaining or ())
    obj["tradeoff"] = scenario.tradeoff
    obj["sources"] = [dict({"id": s.id, "rate": s.rate}, **({"device": s.device} if s.device
                                                               else {}))
                      for s in scenario.sources]
    workers = []
    for w in scenario.workers:
        item: Dict[str, Any] = {"id": w.id, "stage": w.stage, "capacity": w.capacity}
        if w.power_modes:
            item["power_modes"] = dict(w.power_modes)
        if w.device:
            item["device"] = w.device
        workers.append(item)
    obj["workers"] = workers
    obj["links"] = [{"from": l.src, "to": l.dst, "rate": l.rate} for l in scenario.links]
    if scenario.knobs:
        obj["knobs"] = dict(scenario.knobs)
    return obj


def save_scenario(path: str, scenario: Scenario) -> List[str]:
    """Write ``scenario`` as JSON to ``path``; its exit profile goes next to it as
    ``<name>.exit_profile.npz``. Returns the paths written."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    written = []
    profile_name = None
    if scenario.exit_profile is not None:
        stem = os.path.splitext(os.path.basename(path))[0]
        profile_name = stem + ".exit_profile.npz"
        save_exit_profile(os.path.join(folder, profile_name), scenario.exit_profile)
        written.append(os.path.join(folder, profile_name))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(scenario_to_json(scenario, profile_name), f, indent=1)
        f.write("\n")
    written.insert(0, path)
    return written
