"""Scenario files (JSON, SI units) for ``plan`` and ``simulate``: parsing, validation, writing.

Parsing is separate from reading: ``parse_scenario(obj, base_dir)`` validates a decoded JSON
object, ``load_scenario(path)`` reads the file and calls it. Every error names the field, e.g.
``workers[2].stage: must be an integer in [1, 4], got 0``. ``scenario_to_json`` is the inverse of
``parse_scenario`` and ``save_scenario`` writes a file (plus its exit profile) that
``load_scenario`` reads back unchanged.
"""

from __future__ import annotations

import json
import os
import unicodedata
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from agent.config.checks import POSITIVE_RANGE  # a scenario's task rates and sizes
from agent.config.checks import RATE_RANGE, service_time_problem  # capacities and link rates
from agent.config.fields import REQUIRED, Fields
from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.policies.setting import (DEFAULT_TRADEOFF, Link, Scenario, ScenarioError, Source, Stage,
                                    Worker)
from engines.exit_profile import ExitProfile, load_exit_profile, save_exit_profile


def _id(item: Fields, seen: set) -> str:
    v = item.str("id", non_empty=True)
    if any(unicodedata.category(c) == "Cc" for c in v):  # plan prints one line per node
        raise item.fail("id", "must not hold control characters (a newline, a tab, NUL): "
                        "ids are printed one per line; give letters, digits, '.', '_' or '-'")
    if v in seen:
        raise item.fail("id", "duplicate node id")
    seen.add(v)
    return v


def _power_modes(item: Fields) -> Tuple[Tuple[str, float], ...]:
    modes = item.table("power_modes", {}, shape="an object {mode name: capacity FLOP/s}")
    return tuple((str(name), rate_field(modes, name)) for name in modes.obj)


def _device(item: Fields) -> str:
    v = item.value("device", "")
    if not isinstance(v, str):
        raise item.fail("device", "must be a string (a device id)")
    return v


def _check_shared_device(workers: List[Worker], where: str,
                         by_device: Dict[str, List[Worker]]) -> None:
    """Stages held by one device share its processor: one capacity, each stage once.
    ``by_device`` holds the workers checked so far per device (this one is added)."""
    new = workers[-1]
    same = by_device.setdefault(new.device or new.id, [])
    for w in same:
        if w.stage == new.stage:
            raise ScenarioError("%s.device: %r already serves stage %d (worker %r)"
                                % (where, new.device, w.stage, w.id))
        if w.capacity != new.capacity or w.power_modes != new.power_modes:
            raise ScenarioError("%s.capacity: workers on device %r share one processor, so "
                                "capacity and power_modes must equal those of %r"
                                % (where, new.device, w.id))
    same.append(new)


KNOWN_KEYS = ("stages", "remaining", "exit_profile", "sources", "workers", "links", "tradeoff",
              "knobs", "comment", "synthetic")
STAGE_KEYS = ("flops", "input_bytes", "exit", "comment")
SOURCE_KEYS = ("id", "rate", "device", "comment")
WORKER_KEYS = ("id", "stage", "capacity", "power_modes", "device", "comment", "terminal")
LINK_KEYS = ("from", "to", "rate", "comment", "restart")


def _positive(item: Fields, key: str) -> float:
    return item.num(key, lo=POSITIVE_RANGE[0], hi=POSITIVE_RANGE[1])


def rate_field(item: Fields, key: str, default: Any = REQUIRED) -> float:
    """A capacity (FLOP/s) or link rate (bytes/s) of a scenario or topology: in RATE_RANGE,
    the range the agents' messages carry (``default`` None: optional, None when absent)."""
    return item.num(key, default, lo=RATE_RANGE[0], hi=RATE_RANGE[1])


def check_servable(scenario: Scenario) -> Scenario:
    """``scenario`` if agents could serve it: every capacity (power modes too) and link rate in
    RATE_RANGE, and every worker's stage done within a day (``service_time_problem``) at each
    of its capacities; else a ``ScenarioError`` naming the field (``workers[2].capacity: ...``).
    ``parse_scenario`` checks a file with it, ``save_scenario`` what it is given to write (a
    generated setting that ``plan`` would refuse is not written)."""
    for i, w in enumerate(scenario.workers):
        flops = scenario.stages[w.stage - 1].flops
        for field, mu in (("capacity", w.capacity),) + tuple(
                ("power_modes.%s" % name, c) for name, c in w.power_modes):
            why = (service_time_problem(flops, mu) if RATE_RANGE[0] <= mu <= RATE_RANGE[1]
                   else "must be in [%g, %g], got %r" % (RATE_RANGE + (mu,)))
            if why:
                raise ScenarioError("workers[%d].%s: %s" % (i, field, why))
    for i, link in enumerate(scenario.links):
        if not RATE_RANGE[0] <= link.rate <= RATE_RANGE[1]:
            raise ScenarioError("links[%d].rate: must be in [%g, %g], got %r"
                                % ((i,) + RATE_RANGE + (link.rate,)))
    return scenario


def parse_scenario(obj: Any, base_dir: str = ".") -> Scenario:
    """Validate a decoded scenario object; ``exit_profile`` paths are relative to ``base_dir``."""
    if not isinstance(obj, dict):
        raise ScenarioError("scenario: top level must be a JSON object")
    sources = obj.get("sources")
    if "stages" not in obj and (set(obj) & {"bundle", "agent", "faults", "fleet"} or any(
            isinstance(x, dict) and "share" in x for x in (sources if isinstance(sources, list)
                                                          else []))):  # not "unknown field"
        raise ScenarioError("a testbed topology, not a scenario: plan and simulate read a "
                            "scenario file (stages, capacities and rates; docs/formats.md, "
                            "'Scenario file'; `edge-agent scenario` writes the papers' settings)")
    top = Fields(obj, "", ScenarioError)
    top.reject_unknown(KNOWN_KEYS)
    stages = [Stage(_positive(s, "flops"), _positive(s, "input_bytes"), s.bool("exit", False))
              for s in top.tables("stages", min_len=1, known=STAGE_KEYS)]
    h = len(stages)

    seen: set = set()
    sources = [Source(_id(s, seen), _positive(s, "rate"), _device(s))
               for s in top.tables("sources", min_len=1, known=SOURCE_KEYS)]
    workers: List[Worker] = []
    by_device: Dict[str, List[Worker]] = {}
    for s in top.tables("workers", min_len=1, known=WORKER_KEYS):
        wid = _id(s, seen)
        workers.append(Worker(wid, s.int("stage", lo=1, hi=h), rate_field(s, "capacity"),
                              _power_modes(s), _device(s), s.bool("terminal", False)))
        _check_shared_device(workers, s.where, by_device)
        _check_terminal(workers[-1], stages, s.where)
    stage_of = {s.id: 0 for s in sources}
    stage_of.update({w.id: w.stage for w in workers})
    served = set(stage_of.values())
    for st in range(1, h + 1):
        if st not in served:
            raise ScenarioError("workers: no worker serves stage %d" % st)
    terminal = {w.id for w in workers if w.terminal}
    links = [Link(a, b, rate_field(l, "rate"), l.bool("restart", False))
             for l, a, b in read_links(top, stage_of, stage_of, h, LINK_KEYS, terminal)]
    remaining, profile = _exits(top, stages, base_dir)
    return check_servable(Scenario(
        tuple(stages), tuple(sources), tuple(workers), tuple(links),
        top.num("tradeoff", DEFAULT_TRADEOFF, lo=0.0, hi=1.0), remaining, profile,
        dict(top.table("knobs", {}, shape="an object").obj), top.str("comment", ""),
        top.bool("synthetic", False)))


def read_links(top: Fields, stage_of: Dict[str, int], last_of: Dict[str, int], h: int,
               known: Sequence[str],
               terminal: Collection[str] = ()) -> List[Tuple[Fields, str, str]]:
    """The ``links`` of a scenario or topology file, checked: both ends are known nodes, the
    receiver holds a stage right after one of the sender's (h -> h+1 when every node holds one
    stage: ``last_of`` = ``stage_of``), no pair twice, and every node short of stage ``h`` sends
    somewhere. Returns (entry reader, from, to) per link; errors are the file's (``top.error``).
    When ``known`` has ``restart``, a link with ``restart: true`` goes from a worker to a stage-1
    worker instead; a ``terminal`` node sends nowhere.
    """
    out = []
    pairs = set()
    for l in top.tables("links", min_len=1, known=known):
        a, b = l.str("from"), l.str("to")
        for key, v in (("from", a), ("to", b)):
            if v not in stage_of:
                raise l.fail(key, "unknown node")
        if "restart" in known and l.bool("restart", False):
            if stage_of[a] < 1 or stage_of[b] != 1:
                raise top.error("%s: a restart link goes from a worker to a stage-1 worker, but "
                                "%r is stage %d and %r is stage %d"
                                % (l.where, a, stage_of[a], b, stage_of[b]))
        elif not (stage_of[b] <= last_of[a] + 1 and last_of[b] >= stage_of[a] + 1):
            raise top.error("%s: links go from stage h to h+1, but %r is stage %d and %r is "
                            "stage %d" % (l.where, a, stage_of[a], b, stage_of[b]))
        if (a, b) in pairs:
            raise top.error("%s: duplicate link %s -> %s" % (l.where, a, b))
        if a in terminal:
            raise top.error("%s: %r is terminal (it answers every task), so it has no links"
                            % (l.where, a))
        pairs.add((a, b))
        out.append((l, a, b))
    senders = {a for a, _ in pairs}
    for node in stage_of:
        if last_of[node] < h and node not in senders and node not in terminal:
            raise top.error("links: %r (stage %d) has no link to stage %d"
                            % (node, last_of[node], last_of[node] + 1))
    return out


def _check_terminal(w: Worker, stages: List[Stage], where: str) -> None:
    """A terminal worker answers at its stage, so the stage must carry a head (or be the last)."""
    if w.terminal and w.stage < len(stages) and not stages[w.stage - 1].exit:
        raise ScenarioError("%s.terminal: stage %d has no exit head to answer with"
                            % (where, w.stage))


def _exits(top: Fields, stages: List[Stage],
           base_dir: str) -> Tuple[Optional[Tuple[float, ...]], Optional[ExitProfile]]:
    """Exactly one of ``remaining`` (fixed I_h per stage) or ``exit_profile`` (a file)."""
    h = len(stages)
    if top.has("remaining") == top.has("exit_profile"):
        raise ScenarioError("scenario: give exactly one of 'remaining' (fixed thresholds) or "
                            "'exit_profile' (tuned thresholds)")
    if top.has("remaining"):
        rem = top.value("remaining")
        if not isinstance(rem, list) or len(rem) != h:
            raise top.fail("remaining", "must be a list of %d numbers (one per stage)" % h)
        for i, v in enumerate(rem):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ScenarioError("remaining[%d]: must be a number in [0, 1], got %r" % (i, v))
            if (not stages[i].exit or i == h - 1) and v != 1.0:  # the last stage answers all
                raise ScenarioError("remaining[%d]: stage %d %s, so it must be 1.0, got %r" % (
                    i, i + 1, "is the last" if i == h - 1 else "has no exit", v))
        return tuple(float(v) for v in rem), None
    p = top.value("exit_profile")
    if not isinstance(p, str):
        raise top.fail("exit_profile", "must be a path string")
    try:
        profile = load_exit_profile(os.path.join(base_dir, p))
    except UsageError as exc:
        raise ScenarioError("exit_profile: %s" % exc)
    want = tuple(i + 1 for i, s in enumerate(stages[:-1]) if s.exit) + (h,)  # final head once
    if profile.exit_stages != want:
        raise ScenarioError("exit_profile: heads at stages %s, but the scenario's exits "
                            "(plus the final stage) are %s" % (profile.exit_stages, want))
    return None, profile


def load_scenario(path: str) -> Scenario:
    """Read and validate a scenario JSON file, its ``knobs`` and policy sections included;
    every error is a ``ScenarioError`` starting with ``path``."""
    # the policies' table loads every policy: imported when a file is read, not by the users of
    # this module's ranges and writer
    from agent.policies.registry import check_scenario_knobs

    obj = read_json_file(path, ScenarioError, "scenario")
    try:
        scenario = parse_scenario(obj, os.path.dirname(os.path.abspath(path)))
        check_scenario_knobs(scenario.knobs)  # here (policy sections too): errors name the file
        return scenario
    except ScenarioError as exc:  # the field's path in the file, after the file's
        raise ScenarioError("%s: %s" % (path, exc)) from None


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
        if w.terminal:
            item["terminal"] = True
        workers.append(item)
    obj["workers"] = workers
    obj["links"] = [dict({"from": l.src, "to": l.dst, "rate": l.rate},
                         **({"restart": True} if l.restart else {})) for l in scenario.links]
    if scenario.knobs:
        obj["knobs"] = dict(scenario.knobs)
    return obj


def save_scenario(path: str, scenario: Scenario, what: str = "scenario") -> List[str]:
    """Write ``scenario`` as JSON to ``path``; its exit profile goes next to it as
    ``<name>.exit_profile.npz``. Returns the paths written.

    All or nothing, as far as a file system allows: both contents are made and both paths
    checked before anything is written; the profile is written first (so the JSON never names a
    missing one) and, if the JSON then cannot be written, the profile this call wrote is removed
    again (or the one it replaced put back), as are folders it made. Errors are ``FileFault``
    (a ``UsageError``) naming ``what`` (e.g. ``--out``) and the path, or, before anything is
    written, ``check_servable``'s ``ScenarioError`` naming the field.
    """
    import io

    from agent.ops.files import check_output_file, first_missing_dir, output_errors

    check_servable(scenario)
    folder = os.path.dirname(os.path.abspath(path))
    profile_name = profile_path = profile = None
    if scenario.exit_profile is not None:
        profile_name = os.path.splitext(os.path.basename(path))[0] + ".exit_profile.npz"
        profile_path = os.path.join(folder, profile_name)
        buf = io.BytesIO()
        save_exit_profile(buf, scenario.exit_profile)
        profile = buf.getvalue()
    text = json.dumps(scenario_to_json(scenario, profile_name), indent=1) + "\n"
    check_output_file(path, what)
    if profile_path is not None:
        check_output_file(profile_path, what)
    made = first_missing_dir(folder)
    old_profile: Optional[bytes] = None
    wrote_profile = False
    try:
        if made is not None:
            with output_errors(what, folder):
                os.makedirs(folder, exist_ok=True)
        if profile_path is not None and profile is not None:
            if os.path.exists(profile_path):  # kept, to be put back if the JSON fails
                with output_errors(what, profile_path), open(profile_path, "rb") as f:
                    old_profile = f.read()
            with output_errors(what, profile_path):
                write_atomic(profile_path, profile)
            wrote_profile = True
        with output_errors(what, path):
            write_atomic(path, text)
    except BaseException:
        _undo(profile_path if wrote_profile else None, old_profile, folder, made)
        raise
    return [path] + ([profile_path] if profile_path is not None else [])


def _undo(profile_path: Optional[str], old_profile: Optional[bytes], folder: str,
          made: Optional[str]) -> None:
    """After a failed ``save_scenario``: the profile it wrote (``profile_path``) put back as it
    was or removed, then the folders it made, from ``folder`` up to ``made``, if empty."""
    try:
        if profile_path is not None and old_profile is not None:
            write_atomic(profile_path, old_profile)
        elif profile_path is not None:
            os.unlink(profile_path)
        while made is not None:
            os.rmdir(folder)  # only an empty one: never what someone else put there
            if folder == made:
                break
            folder = os.path.dirname(folder)
    except OSError:
        pass  # best effort: the error being raised says what failed first
