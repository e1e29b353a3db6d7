"""Testbed topology files (JSON): which agents exist, what they emulate, how they are linked.

A topology names sources (each with its share of the total arrival rate), workers (stage and,
optionally, an emulated capacity) and links (optionally emulated at a rate in bytes/s); node
ids follow the node config's rule. The testbed turns it into one node config per agent for a
local run, and into a DTO-EE scenario (stage FLOP and bytes from the bundle) for the model's
predicted delay (``agent.testbed.topology_bundle``). ``parse_topology(obj, base_dir)``
validates (relative paths from ``base_dir``), ``load_topology(path)`` reads. Every error names
the field, after the file (``topo.json: workers[2].stage: ...``); knob tables and ``agent`` are
read as an agent's config reads them, and a CURVE key pasted into ``agent``'s
``secret_key_path`` or ``public_key_path`` is refused there, never shown.

A topology with a ``fleet`` object describes agents that already run on other hosts: the
testbed then starts nothing and only drives load into the sources and collects their records
(see ``agent/testbed/fleet.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.config.checks import PATH_FIELDS, check_node_id, check_text_path
from agent.config.fields import Fields
from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.net.keyfiles import KEY_PATH_FIELDS, inline_key_refusal, is_z85_key
from agent.policies.registry import names
from agent.policies.setting import DEFAULT_TRADEOFF
from agent.policies.thresholds import stage_key
from agent.scenario.format import rate_field, read_links
from agent.testbed.bounds import MIN_SLOT_S, seconds, worker_stages
from agent.testbed.faults import Fault, parse_faults
from agent.testbed.nodeparts import check_node_parts
from agent.testbed.presets import NO_EXIT_SUFFIX, TOPOLOGY_DIR, preset_problem, shipped_base
from agent.testbed.presets import shipped_presets as shipped_presets  # callers import it here

DEFAULT_TOPOLOGY = os.path.join(TOPOLOGY_DIR, "default.json")


class TopologyError(UsageError):
    """A topology file is malformed; the message names the offending field."""


def topology_error(path: str, what: str) -> TopologyError:
    """``FILE: key.path: problem``: ``what`` in the topology file ``path``, as it was given."""
    return TopologyError("%s: %s" % (path or "topology", what))


@dataclass(frozen=True)
class TbSource:
    id: str
    share: float  # fraction of the total arrival rate this source generates (shares sum to 1)
    host: str = ""  # device it runs on: agents with the same host share one ("": its own)


@dataclass(frozen=True)
class TbWorker:
    id: str
    stage: int  # 1-based stage it serves
    emulate_capacity_flops: Optional[float] = None  # pad service time to flops / this; None = real
    host: str = ""  # device it runs on: agents with the same host share one ("": its own)
    last_stage: int = 0  # holds stages stage..last_stage (MDI-Exit nodes); 0 = just ``stage``
    terminal: bool = False  # answers every task at its last stage (a DIMEE/MLCI tier); no links out

    @property
    def stages(self) -> Tuple[int, int]:
        """First and last stage this worker holds."""
        return (self.stage, max(self.stage, self.last_stage))


@dataclass(frozen=True)
class TbLink:
    src: str
    dst: str
    rate_bytes_s: Optional[float] = None  # emulated link rate; None = the real (loopback) link
    delay_ms: float = 0.0  # one-way delay added in netns mode (needs sch_netem)
    loss: float = 0.0  # fraction of packets dropped in netns mode
    # rate the agents' configs give the link (their prior) when it differs from the real one
    # (netns: the kernel shapes rate_bytes_s); None = rate_bytes_s
    config_rate_bytes_s: Optional[float] = None


@dataclass(frozen=True)
class Topology:
    """A whole testbed: agents, links, and the knobs every agent shares."""

    sources: Tuple[TbSource, ...]
    workers: Tuple[TbWorker, ...]
    links: Tuple[TbLink, ...]
    bundle: str = "demo"  # "demo" = the shipped demo bundle, else a path
    backend: str = "onnxruntime"
    tradeoff: float = DEFAULT_TRADEOFF  # a in DTO-EE's utility
    slot_s: float = 2.0  # DTO-EE slot length
    warmup_s: float = 2.0  # load before measuring starts (first configuration phase, caches)
    thresholds: Mapping[int, float] = field(default_factory=dict)  # initial exit thresholds
    knobs: Mapping[str, Any] = field(default_factory=dict)  # {policy: {knob: value}} for agents
    agent: Mapping[str, Any] = field(default_factory=dict)  # extra node-config fields, every agent
    fleet: Optional[Mapping[str, Any]] = None  # agents already running elsewhere
    faults: Tuple[Fault, ...] = ()  # fault schedule, injected in every rate's load
    path: str = ""  # file it came from, as shown (a shipped variant's name follows it)
    file: str = field(default="", compare=False)  # the file itself ("" for none), not from path
    rates: str = ""  # the testbed's --rates when none is given ("" = the command's default)
    # the decoded JSON object it was parsed from, for the run folder's copy (rundir)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def error(self, what: str) -> TopologyError:
        """``topology_error`` in this topology's file."""
        return topology_error(self.path, what)

    def host_of(self, node_id: str) -> str:
        """The device label of a node ("" when it has a device of its own)."""
        for a in tuple(self.sources) + tuple(self.workers):
            if a.id == node_id:
                return a.host
        return ""

    def node_ids(self) -> List[str]:
        return [s.id for s in self.sources] + [w.id for w in self.workers]

    def stage_of(self, node_id: str) -> int:
        for w in self.workers:
            if w.id == node_id:
                return w.stage
        return 0

    def last_stage_of(self, node_id: str) -> int:
        """Last stage a node holds (its stage for one-stage workers, 0 for a source)."""
        for w in self.workers:
            if w.id == node_id:
                return w.stages[1]
        return 0

    @property
    def multi_stage(self) -> bool:
        """Some worker holds several stages (eq. 8 and the FIFO simulation do not apply)."""
        return any(w.stages[1] > w.stage for w in self.workers)

    def successors(self, node_id: str) -> List[TbLink]:
        return [l for l in self.links if l.src == node_id]

    def predecessors(self, node_id: str) -> List[TbLink]:
        return [l for l in self.links if l.dst == node_id]

    @property
    def num_stages(self) -> int:
        return max(w.stages[1] for w in self.workers)

    @property
    def capacities_emulated(self) -> bool:
        return any(w.emulate_capacity_flops is not None for w in self.workers)

    def emulation_summary(self, links_by: str = "emulated") -> str:
        """One line saying what is emulated (printed with every report); ``links_by``: how the
        links' rates are enforced (by the senders' pacing, or "shaped in the kernel")."""
        em = [w for w in self.workers if w.emulate_capacity_flops is not None]
        lk = [l for l in self.links if l.rate_bytes_s is not None]
        parts = []
        if em:
            caps = sorted(w.emulate_capacity_flops for w in em)  # the spread as %g: 3.9e+10x
            parts.append("capacities of %d/%d workers emulated (%.3g..%.3g FLOP/s, %.3gx spread)"
                         % (len(em), len(self.workers), caps[0], caps[-1], caps[-1] / caps[0]))
        else:
            parts.append("worker capacities are real (measured)")
        if lk:
            rates = [l.rate_bytes_s for l in lk]
            parts.append("%d/%d links %s (%.3g..%.3g bytes/s)"
                         % (len(lk), len(self.links), links_by, min(rates), max(rates)))
        else:
            parts.append("links are real")
        return "; ".join(parts)


# node-config fields the testbed writes for each agent: in "agent" they would be overwritten
PER_AGENT_FIELDS = ("node_id", "role", "stage", "last_stage", "terminal", "bundle", "state_dir",
                    "control_bind", "data_bind", "peers", "policy", "policy_knobs", "tradeoff",
                    "slot_length_s", "backend", "emulate_links", "thresholds", "arrival",
                    "arrival_rate_tasks_s", "max_tasks", "seed", "emulate_capacity_flops")
KNOWN_KEYS = ("comment", "bundle", "backend", "tradeoff", "slot_s", "warmup_s", "thresholds",
              "knobs", "agent", "sources", "workers", "links", "fleet", "faults", "rates")
SOURCE_KEYS = ("id", "share", "host", "comment")
WORKER_KEYS = ("id", "stage", "last_stage", "emulate_capacity_flops", "host", "comment",
               "terminal")
LINK_KEYS = ("from", "to", "rate_bytes_s", "delay_ms", "loss", "config_rate_bytes_s", "comment")
BACKENDS = ("auto", "onnxruntime", "tensorrt")


def _ident(item: Fields, seen: set) -> str:
    v = check_node_id(item.value("id", None), item.path("id"), TopologyError)  # a node's rule
    if v in seen:
        raise item.fail("id", "duplicate node id")
    seen.add(v)
    return v


def _host(item: Fields) -> str:
    h = item.value("host", "")
    if not isinstance(h, str):
        raise item.fail("host", "must be a device name (agents with the same host share one)")
    return h


def _worker(s: Fields, seen: set) -> TbWorker:
    wid = _ident(s, seen)
    st, last = worker_stages(s)
    return TbWorker(wid, st, rate_field(s, "emulate_capacity_flops", None), _host(s), last,
                    s.bool("terminal", False))


def parse_topology(obj: Any, base_dir: str = ".", path: str = "",
                   strict: bool = True) -> Topology:
    """Validate a decoded topology; relative paths (``bundle``, ``agent``'s) are from base_dir;
    ``strict`` False: knobs and ``agent`` unread as a node's (a run's copy: it ran with them)."""
    if not isinstance(obj, dict):
        raise TopologyError("topology: top level must be a JSON object")
    top = Fields(obj, "", TopologyError)
    top.reject_unknown(KNOWN_KEYS)
    seen: set = set()
    sources = [TbSource(_ident(s, seen), s.num("share", lo=0.0, lo_open=True, hi=1.0), _host(s))
               for s in top.tables("sources", min_len=1, known=SOURCE_KEYS)]
    total = sum(s.share for s in sources)
    if abs(total - 1.0) > 1e-6:
        raise TopologyError("sources: shares must sum to 1, got %.6g" % total)

    workers = [_worker(s, seen) for s in top.tables("workers", min_len=1, known=WORKER_KEYS)]
    h = max(w.stages[1] for w in workers)
    for st in range(1, h + 1):
        if not any(w.stage <= st <= w.stages[1] for w in workers):
            raise TopologyError("workers: no worker serves stage %d" % st)
    links = _links(top, sources, workers, h)

    bundle = top.value("bundle", "demo")
    if not isinstance(bundle, str) or not bundle:
        raise top.fail("bundle", "must be \"demo\" or a path")
    if bundle != "demo":  # written into every agent's config: a UTF-8 name
        bundle = check_text_path(os.path.normpath(os.path.join(base_dir, bundle)), "bundle",
                                 TopologyError)
    knobs = top.table("knobs", {}, shape="an object {policy: {knob: value}}")
    for policy in knobs.obj:
        if policy not in names("agent"):  # a typo's knobs would be ignored
            raise knobs.fail(policy, "no such policy on a node (policies: %s)"
                             % ", ".join(names("agent")))
        knobs.table(policy, shape="an object {knob: value}")
    agent = top.table("agent", {}, shape="an object of node-config fields")
    for key in sorted(set(agent.obj) & set(PER_AGENT_FIELDS)):
        raise agent.fail(key, "the testbed sets it for each agent (from sources, workers, "
                         "links, thresholds, knobs or the command line)")
    agent_fields = dict(agent.obj)  # paths, as bundle: relative to this file (not to a run
    for key in (k for k in PATH_FIELDS if agent.str(k, "")):  # folder the configs go to)
        agent_fields[key] = check_text_path(_agent_path(agent, key, base_dir, strict),
                                            agent.path(key), TopologyError)
    if strict:  # every knob table, run or not: a wrong knob fails now, not when first run
        check_node_parts(knobs, Fields(agent_fields, agent.where, TopologyError), PER_AGENT_FIELDS)
    fleet = None  # checked field by field by the fleet driver
    if top.value("fleet", None) is not None:
        fleet = top.table("fleet", shape="an object").obj
    return Topology(
        tuple(sources), tuple(workers), tuple(links), bundle=bundle,
        backend=top.str("backend", "onnxruntime", choices=BACKENDS),
        tradeoff=top.num("tradeoff", DEFAULT_TRADEOFF, lo=0.0, hi=1.0),
        slot_s=seconds(top, "slot_s", 2.0, lo=MIN_SLOT_S), warmup_s=seconds(top, "warmup_s", 2.0),
        thresholds=_thresholds(top, h), knobs=dict(knobs.obj),
        agent=agent_fields,
        fleet=fleet, path=path, file=path, rates=top.str("rates", ""), document=obj,
        faults=tuple(parse_faults(top, [w.id for w in workers],
                                  [s.id for s in sources] + [w.id for w in workers],
                                  [(l.src, l.dst) for l in links])))


def _agent_path(agent: Fields, key: str, base_dir: str, refuse_keys: bool) -> str:
    """``agent.KEY``, a path field, from ``base_dir`` as a node config reads it. With
    ``refuse_keys``, a key pasted into a key file's field is refused here, before any agent or
    file has it, in the node config's words: kept whole (``is_z85_key``), its "/"s are never
    folded into a path that the refusal of a missing file would show (a run's copy is read as
    it ran: its report is not refused)."""
    if key not in KEY_PATH_FIELDS:
        return agent.file_path(key, base_dir)
    path = agent.file_path(key, base_dir, as_given=is_z85_key)
    refusal = inline_key_refusal(key, path) if refuse_keys else None
    if refusal is not None:
        raise TopologyError("%s: %s" % (agent.path(key), refusal))
    return path


def _links(top: Fields, sources: Sequence[TbSource], workers: Sequence[TbWorker],
           h: int) -> List[TbLink]:
    """The links: each feeds a stage that follows one of its sender's, once; none missing."""
    stage_of = {s.id: 0 for s in sources}
    stage_of.update({w.id: w.stage for w in workers})
    last_of = {s.id: 0 for s in sources}
    last_of.update({w.id: w.stages[1] if not w.terminal else h for w in workers})  # no link out
    links = [TbLink(a, b, rate_field(l, "rate_bytes_s", None), l.num("delay_ms", 0.0, lo=0.0),
                    l.num("loss", 0.0, lo=0.0, hi=1.0, hi_open=True),
                    rate_field(l, "config_rate_bytes_s", None))
             for l, a, b in read_links(top, stage_of, last_of, h, LINK_KEYS)]
    for l in links:
        if any(w.terminal and w.id == l.src for w in workers):
            raise TopologyError("links: %r is terminal (it answers every task), so it sends "
                                "nothing: drop the link %s -> %s" % (l.src, l.src, l.dst))
    for node in stage_of:
        if stage_of[node] > 0 and not any(l.dst == node for l in links):
            raise TopologyError("links: nothing sends to %r (stage %d)" % (node, stage_of[node]))
    return links


def _thresholds(top: Fields, h: int) -> Dict[int, float]:
    """Initial exit thresholds ``{stage: threshold}``, keyed by early-exit stages 1..h-1."""
    thresholds, th = top.table("thresholds", {}, shape="an object {stage: threshold}"), {}
    for k in thresholds.obj:
        if not 1 <= (stage_key(k) or 0) < h:  # digits only, and few: no stage has more
            raise TopologyError("thresholds: key %r is not an early-exit stage: %s" % (k, (
                "the workers serve stages 1..%d and the last answers every task, so thresholds "
                "go to stages 1..%d" % (h, h - 1)) if h > 1 else "the workers serve stage 1 "
                "only, which answers every task, so there is no threshold to set"))
        th[int(k)] = thresholds.num(k, lo=0.0, lo_open=True, hi=1.0)
    return th


def load_topology(path: Optional[str] = None) -> Topology:
    """Read and validate a topology JSON file (the shipped default when ``path`` is None).

    A ``path`` that is no file (none, or a run's ``--out`` folder) naming a shipped topology
    loads that one; ``<name>-noee`` (mdi-* only): with ``mdi-exit``'s ``early_exit`` false."""
    path = path or DEFAULT_TOPOLOGY
    if (not os.path.exists(path) or os.path.isdir(path) and shipped_base(path) is not None) \
            and os.sep not in path and not path.endswith(".json"):
        name, no_exit = path, path.endswith(NO_EXIT_SUFFIX)
        base = shipped_base(name)
        if base is None:
            raise TopologyError(preset_problem(path))
        topo = load_topology(os.path.join(TOPOLOGY_DIR, base + ".json"))
        if not no_exit:
            return topo
        knobs = {k: dict(v) for k, v in topo.knobs.items()}
        knobs.setdefault("mdi-exit", {})["early_exit"] = False
        return replace(topo, knobs=knobs, path=topo.path + " (" + name + ")")
    obj = read_json_file(path, TopologyError, "topology")
    try:
        return parse_topology(obj, os.path.dirname(os.path.abspath(path)), path)
    except TopologyError as exc:  # the field's path in the file, after the file's
        raise topology_error(path, str(exc)) from None
