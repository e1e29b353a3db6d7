"""Driving a fleet that already runs: push load into its sources, time every task's answer.

A topology with a ``fleet`` object names, for every source, the endpoint where that source
takes tasks from a local client (its config has ``arrival = "client"`` and ``client_bind``)::

    "fleet": {"policy": "dtoee",
              "clients": {"cam1": "tcp://10.0.0.21:5560", "cam2": "tcp://10.0.0.22:5560"},
              "replay": "/data/replay.npz", "result_timeout_s": 70}

``"keys_dir"`` (a `fleet render` keys folder, relative to the topology file) and ``"client"``
(default ``workstation``) reach sources whose client endpoint is CURVE-served; `fleet render`
writes such a topology (``testbed.json``), keeping the topology's own ``replay`` and
``result_timeout_s`` (``rendered_fleet``). The testbed starts nothing there. For each rate it
connects one ``agent.fleet.client.Client`` per source, sends its inputs (images from the replay
set) at Poisson times with the source's share of the rate, and takes the answer the source returns
for each; the client's own clock gives the delay and the replay labels give the accuracy. The
testbed's side of each task is written as that rate's records (``run.json`` beside them), so
``edge-agent report`` can summarise the run again. A task without an answer after
``result_timeout_s`` (make it longer than the sources' ``result_timeout_s * max_attempts``) counts
as lost. Before the first rate each source's endpoint is checked (``fleet_inputs``; `edge-agent
testbed` checks before it makes the run folder, ``sources_checked`` saying so): one that cannot be
reached (a host that does not resolve, nothing listening, a key refused, a replay input above its
``max_message_bytes``) stops the run at once with one line naming it, as ``submit`` does, instead
of a whole run of lost tasks. A source's ``max_message_bytes`` is the one the render's
``fleet.json`` records for it, else the topology's ``agent.max_message_bytes``, else the node
config's default (``source_limits``). A record's ``status`` is the answer's outcome (``STATUSES``),
with the source's ``reason`` and, for an input it refused (``error``, e.g. ``bad_input``: NaN or
out-of-range values, a wrong shape), its ``detail``: such a task is counted as ``error``, not lost,
and ``agent.testbed.report.error_lines`` says what the sources said. The fleet runs one policy;
comparing another means restarting the fleet with it, so ``--policies`` may only name the fleet's
policy (and defaults to it), checked before the run folder is made.
``"emulated": false`` (what `fleet render` writes without ``--emulate``) says the devices run
at their own capacities and the links at their real rates: the topology's
``emulate_capacity_flops`` and link rates are then nominal, used only to turn ``N%`` rates
into tasks/s, and the run says so instead of claiming emulation. Without the field the
topology's capacities are what the fleet runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import zmq

from agent.fleet.client import Client, ClientKeys, InputTooLarge
from agent.errors import UsageError
from engines.npzfile import load_npz
from engines.profile import as_input, check_set_range
from agent.ops.samples import checked_inputs, checked_labels
from agent.ops.state import RECORDS_FILE
from agent.testbed.local import rate_label, write_run_file
from agent.testbed.report import RunResult, summarise_records
from agent.testbed.topology import Topology, TopologyError
from engines.demo import REPLAY_PATH


# the fields of a fleet object; `fleet render` keeps the topology's own value of the first
# three in the testbed.json it writes, and writes the others from its options and inventory
FLEET_FIELDS = ("replay", "result_timeout_s", "comment", "policy", "clients", "keys_dir",
                "client", "emulated")
KEPT_BY_RENDER = FLEET_FIELDS[:3]
CONNECT_WAIT_S = 3.0  # how long each source's endpoint is watched before the first rate


def fleet_settings(topo: Topology) -> dict:
    """Validate the topology's ``fleet`` object; returns it with defaults filled in."""
    f = dict(topo.fleet or {})
    unknown = sorted(set(f) - set(FLEET_FIELDS))
    if unknown:
        raise TopologyError("fleet: unknown field(s) %s" % unknown)
    if not isinstance(f.get("policy"), str):
        raise TopologyError("fleet.policy: the policy the fleet runs, e.g. \"dtoee\"; got %r"
                            % (f.get("policy"),))
    clients = f.get("clients")
    ids = [s.id for s in topo.sources]
    if not isinstance(clients, dict) or sorted(clients) != sorted(ids):
        raise TopologyError("fleet.clients: needs one client endpoint per source %s, got %r"
                            % (ids, clients))
    for sid, ep in clients.items():
        if not isinstance(ep, str) or "://" not in ep:
            raise TopologyError("fleet.clients.%s: must be an endpoint like tcp://HOST:PORT, "
                                "got %r" % (sid, ep))
    if f.get("replay") is not None and not isinstance(f["replay"], str):
        raise TopologyError("fleet.replay: must be the path of an .npz file with arrays x and "
                            "y (\"\": the demo replay set), got %r" % (f["replay"],))
    t = f.get("result_timeout_s", 70.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise TopologyError("fleet.result_timeout_s: must be > 0 seconds, got %r" % (t,))
    f["result_timeout_s"] = float(t)
    if not isinstance(f.get("emulated", True), bool):
        raise TopologyError("fleet.emulated: must be true (the agents emulate the topology's "
                            "capacities and link rates) or false, got %r" % (f["emulated"],))
    if f.get("keys_dir") is not None and not isinstance(f["keys_dir"], str):
        raise TopologyError("fleet.keys_dir: must be a `fleet render` keys folder, got %r"
                            % (f["keys_dir"],))
    return f


def rendered_fleet(topo: Topology, made: dict, clients: Sequence[str]) -> dict:
    """The fleet object `fleet render` writes into ``testbed.json``: ``made`` (what the render
    sets: ``policy``, ``clients``, ``keys_dir``, ``client``, ``emulated``, and ``replay`` from
    ``agent.replay_path``) with the topology's own ``KEPT_BY_RENDER`` fields over it (its
    ``replay`` made absolute, as the testbed reads it from here: ``testbed.json`` lies in
    another folder), checked as the testbed checks them. The topology's own value of a field
    the render writes must agree with it (``policy`` is the render's --policy, defaulting to
    it; ``client`` one of the render's ``clients``): else one ``UsageError`` line naming it."""
    own = dict(topo.fleet or {})
    where = "%s: fleet" % (topo.path or "topology")
    unknown = sorted(set(own) - set(FLEET_FIELDS))
    if unknown:
        raise UsageError("%s: unknown field(s) %s" % (where, unknown))
    out = dict(made, **{k: own[k] for k in KEPT_BY_RENDER if own.get(k) is not None})
    if own.get("client") is not None:
        if own["client"] not in clients:
            raise UsageError("%s.client: %r is not a keypair this render writes (--client: %s)"
                             % (where, own["client"], ", ".join(clients)))
        out["client"] = own["client"]
    if own.get("emulated") is not None and own["emulated"] is not made["emulated"]:
        raise UsageError("%s.emulated: %s, but the render runs %s --emulate: drop the field "
                         "or render accordingly" % (where, json.dumps(own["emulated"]),
                                                    "with" if made["emulated"] else "without"))
    for k in ("clients", "keys_dir"):
        if own.get(k) is not None and own[k] != made[k]:
            raise UsageError("%s.%s: the render writes it (%r, from the inventory and its keys "
                             "folder); drop it from the topology" % (where, k, made[k]))
    if isinstance(out.get("replay"), str) and out["replay"]:
        out["replay"] = os.path.abspath(fleet_path(topo, out["replay"]) if own.get("replay")
                                        else os.path.expanduser(out["replay"]))
        # agent.replay_path is checked where the render copies it to the sources
        if own.get("replay") and not os.path.isfile(out["replay"]):
            raise UsageError("%s.replay: %s is no file (the testbed's replay set, on this "
                             "workstation)" % (where, out["replay"]))
    try:
        fleet_settings(dataclasses.replace(topo, fleet=out))
    except TopologyError as exc:
        raise UsageError("%s: %s" % (topo.path or "topology", exc)) from None
    return out


def fleet_policies(topo: Topology, given: Optional[List[str]]) -> List[str]:
    """The policies to run on a fleet topology: the one the fleet runs (``fleet.policy``) when
    ``--policies`` is not given (``given`` None); a ``--policies`` naming any other is a
    ``UsageError``, raised before anything is written or driven."""
    running = fleet_settings(topo)["policy"]
    if given is None:
        return [running]
    other = [p for p in given if p != running]
    if other:
        raise UsageError("--policies: the fleet runs %r; restart it with another policy to "
                         "compare (got %r)" % (running, ",".join(other)))
    return list(given)


def fleet_emulates(topo: Topology) -> bool:
    """Whether the fleet's agents run the topology's emulated capacities and link rates
    (``fleet.emulated``, default true); false: those are the topology's nominal values."""
    return (topo.fleet or {}).get("emulated", True) is not False


def emulation_line(topo: Topology, links_by: str = "emulated") -> str:
    """What the run emulates, for its ``emulated:`` lines (``Topology.emulation_summary``,
    except on a fleet that emulates nothing)."""
    if topo.fleet is None or fleet_emulates(topo):
        return topo.emulation_summary(links_by)
    return ("nothing: the fleet's devices run at their own capacities and its links at their "
            "real rates (rendered without --emulate)")


def capacity_origin(topo: Topology) -> str:
    """Where the printed capacity comes from, when not from what the agents emulate."""
    if topo.fleet is None or fleet_emulates(topo):
        return ""
    return (" (from the topology's nominal capacities and link rates; the fleet's devices run "
            "at their own)")


def lost_hint(topo: Topology, run_dir: str) -> str:
    """Where to look for why tasks were lost: the run folder's agent logs, or a fleet's
    logs on its devices."""
    if topo.fleet is None:
        return "see the agent logs under %s" % run_dir
    return ("the agents log why on their devices: journalctl -u edge-agent@NODE (the sources: "
            "%s); the testbed's records are under %s"
            % (", ".join(s.id for s in topo.sources), run_dir))


def fleet_path(topo: Topology, path: str) -> str:
    """A path of the topology's ``fleet`` object (``replay``, ``keys_dir``): relative to the
    topology file, as its other paths are (``bundle``, ``agent.replay_path``)."""
    base = os.path.dirname(os.path.abspath(topo.path)) if topo.path else "."
    return os.path.join(base, os.path.expanduser(path))


def client_keys(topo: Topology, f: dict) -> Dict[str, Any]:
    """CURVE keys per source from ``fleet.keys_dir`` (a `fleet render` keys folder, relative
    to the topology file): ``clients/<client>.key_secret`` and ``<source>.key``."""
    if not f.get("keys_dir"):
        return {}
    d = fleet_path(topo, f["keys_dir"])
    secret = os.path.join(d, "clients", str(f.get("client") or "workstation") + ".key_secret")
    try:
        return {sid: ClientKeys.load(secret, os.path.join(d, sid + ".key"))
                for sid in f["clients"]}
    except ValueError as exc:
        raise TopologyError("fleet.keys_dir: %s" % exc) from None


def source_limits(topo: Topology, f: dict) -> Dict[str, Optional[int]]:
    """Each source's ``max_message_bytes``, the limit its client checks an input against: what
    the render's ``fleet.json`` records for it (a `fleet render` ``testbed.json`` names the
    render's keys folder, ``fleet.keys_dir``, beside which the render wrote it), else the
    topology's ``agent.max_message_bytes`` (what the render put in every config), else None
    (the node config's default)."""
    from agent.fleet.manifest import MANIFEST, load_manifest

    man = None
    if f.get("keys_dir"):
        keys = os.path.normpath(fleet_path(topo, f["keys_dir"]))
        man = load_manifest(os.path.join(os.path.dirname(keys), MANIFEST))
    nodes = (man or {}).get("nodes", {})
    agent = topo.agent.get("max_message_bytes")
    return {sid: (nodes.get(sid) or {}).get("max_message_bytes", agent) for sid in f["clients"]}


def _replay(path: Optional[str]):
    path = path or REPLAY_PATH
    arrays = load_npz(path, "fleet.replay")
    if "x" not in arrays or "y" not in arrays:
        raise UsageError("fleet.replay: %s holds no arrays x and y (it has %s)"
                         % (path, ", ".join(sorted(arrays)) or "none"))
    where = "fleet.replay: %s" % path
    x = checked_inputs(np.ascontiguousarray(arrays["x"]), where)
    return x, checked_labels(np.asarray(arrays["y"]), len(x), where)


def drive(clients: Dict[str, str], shares: Dict[str, float], total_rate: float, load_s: float,
          x: np.ndarray, y: np.ndarray, result_timeout_s: float, seed: int = 0,
          tick: Optional[Callable[[str, float], None]] = None,
          keys: Optional[Dict[str, Any]] = None,
          limits: Optional[Dict[str, Optional[int]]] = None) -> List[dict]:
    """Push Poisson load into each source's client endpoint (``agent.client.Client``, CURVE
    with ``keys[source]`` where given, its ``max_message_bytes`` ``limits[source]``); one
    record per task."""
    tick = tick or (lambda phase, frac: None)
    keys, limits = keys or {}, limits or {}
    rng = random.Random(seed)
    ctx = zmq.Context()
    conns: Dict[str, Client] = {}
    pending: Dict[str, dict] = {}
    records: List[dict] = []
    try:
        poller = zmq.Poller()
        for sid, ep in clients.items():
            conns[sid] = Client(ep, keys.get(sid), name="testbed", ctx=ctx,
                                max_message_bytes=limits.get(sid))
            poller.register(conns[sid].sock, zmq.POLLIN)
        by_sock = {c.sock: c for c in conns.values()}
        t0 = time.monotonic()
        nxt = {sid: t0 + rng.expovariate(shares[sid] * total_rate) for sid in clients}
        while True:
            now = time.monotonic()
            for sid, due in list(nxt.items()):
                if due is None or due > now:
                    continue
                if due - t0 >= load_s:
                    nxt[sid] = None
                    continue
                i = rng.randrange(len(x))
                tid = conns[sid].send(x[i:i + 1])
                pending[tid] = {"id": tid, "source": sid, "status": "lost",
                                "created_mono": now, "label": int(y[i])}
                nxt[sid] = due + rng.expovariate(shares[sid] * total_rate)
            for sock, _ in poller.poll(20):
                while True:
                    ans = by_sock[sock].receive(0.0)
                    if ans is None:
                        break
                    rec = pending.pop(ans.id, None)
                    if rec is None:
                        continue
                    rec.update(status=ans.outcome,  # one of STATUSES (parse_answer's)
                               reason=ans.reason or None,
                               finished_mono=rec["created_mono"] + ans.delay_s,
                               exit_stage=ans.exit_stage, cls=ans.cls,
                               correct=(ans.cls == rec["label"]) if ans.ok else None)
                    if ans.detail:  # what was wrong with a refused input, in the source's words
                        rec["detail"] = ans.detail
                    records.append(rec)
            now = time.monotonic()
            loading = any(v is not None for v in nxt.values())
            if not loading and (not pending or now - t0 > load_s + result_timeout_s):
                break
            done = len(records) / float(max(1, len(records) + len(pending)))
            tick("load" if loading else "draining", min(now - t0, load_s) / load_s * done)
    finally:
        for c in conns.values():
            c.close()
        ctx.term()
    for rec in pending.values():
        rec["reason"] = "no answer within %g s" % result_timeout_s
    return records + list(pending.values())


def check_sources(clients: Dict[str, str], keys: Optional[Dict[str, Any]] = None,
                  wait_s: float = CONNECT_WAIT_S,
                  limits: Optional[Dict[str, Optional[int]]] = None,
                  x: Optional[np.ndarray] = None) -> None:
    """``UsageError`` naming the first source (``fleet.clients.ID``) and endpoint that cannot
    take tasks (``Client.check_connection``: a host that does not resolve, nothing listening
    within ``wait_s``, a key refused; or the replay inputs ``x``, all of one size, above its
    ``max_message_bytes`` ``limits[ID]``); a source that is slow to answer the handshake
    passes."""
    keys, limits = keys or {}, limits or {}
    ctx = zmq.Context()
    try:
        for sid, ep in sorted(clients.items()):
            with Client(ep, keys.get(sid), name="testbed", ctx=ctx,
                        max_message_bytes=limits.get(sid)) as c:
                try:
                    if x is not None:
                        c.frames(x[:1], "testbed-%d-0" % os.getpid())
                except InputTooLarge as exc:  # the limit is the source's, as rendered
                    raise UsageError("fleet.replay: fleet.clients.%s: %s; no task sent" % (
                        sid, str(exc).replace(" (given)", "").replace(
                            "give the client that limit", "render the fleet again"))) from None
                problem = c.check_connection(wait_s)
            if problem:
                raise UsageError("fleet.clients.%s: %s: %s; no task sent" % (sid, ep, problem))
    finally:
        ctx.term()


def fleet_inputs(topo: Topology, bundle, check: bool = True) -> tuple:
    """(fleet object, replay inputs as the sources take them, labels, keys, limits); with
    ``check``, each source checked first (``check_sources``: reached, the inputs under its
    ``max_message_bytes``), a ``UsageError`` line naming the first that fails."""
    f = fleet_settings(topo)
    x, y = _replay(fleet_path(topo, f["replay"]) if f.get("replay") else None)
    x = as_input(x, bundle.stage(1).input_dtype)  # uint8 images scaled, as the sources do
    keys, limits = client_keys(topo, f), source_limits(topo, f)
    if check:  # at once, not after a whole rate of lost tasks (or an input no source takes)
        check_set_range(x, bundle.stage(1).input_value_range, "fleet.replay: %s" % (
            f.get("replay") or "the demo replay set"), "the testbed sends it as it is")
        check_sources(f["clients"], keys, limits=limits, x=x)
    return f, x, y, keys, limits


def run_fleet(topo: Topology, bundle, policy: str, rates: Sequence[float], settings,
              seed: int = 0, tick: Optional[Callable[[int, str, float], None]] = None,
              on_result: Optional[Callable[[RunResult], None]] = None) -> List[RunResult]:
    """One ``RunResult`` per rate for the fleet's policy (see the module docstring); its
    sources checked first unless ``settings.sources_checked`` says they were."""
    fleet_policies(topo, [policy])  # the fleet runs no other
    f, x, y, keys, limits = fleet_inputs(topo, bundle,
                                         not settings.sources_checked)
    load_s = topo.warmup_s + settings.duration_s
    out = []
    for i, rate in enumerate(rates):
        recs = drive(f["clients"], {s.id: s.share for s in topo.sources}, rate, load_s, x, y,
                     f["result_timeout_s"], seed=seed * 100 + i, keys=keys, limits=limits,
                     tick=lambda phase, frac, i=i: (tick or (lambda *a: None))(i, phase, frac))
        directory = os.path.join(settings.out_dir, policy, rate_label(rate))
        paths = {}
        for sid in f["clients"]:  # the testbed's side of each task, as a source writes it
            paths[sid] = os.path.join(directory, sid, RECORDS_FILE)
            os.makedirs(os.path.dirname(paths[sid]), exist_ok=True)
            with open(paths[sid], "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in recs if r["source"] == sid)
        write_run_file(directory, "fleet", policy, rate, paths,
                       {sid: sum(1 for r in recs if r["source"] == sid) for sid in f["clients"]},
                       {}, settings.duration_s, load_s)
        out.append(summarise_fleet(topo, policy, rate, recs, settings.duration_s))
        if on_result is not None:
            on_result(out[-1])
    return out


def summarise_fleet(topo: Topology, policy: str, rate: float, recs: Sequence[dict],
                    duration_s: float) -> RunResult:
    """One rate's result from the testbed's records of a fleet run (delays after the warm-up,
    counts over the whole run)."""
    t_first = min((r["created_mono"] for r in recs), default=0.0)
    measured = [r for r in recs if r["created_mono"] - t_first >= topo.warmup_s]
    emulated = topo.capacities_emulated and fleet_emulates(topo)
    res = summarise_records(measured, policy, rate, emulated, duration_s=duration_s)
    everything = summarise_records(recs, policy, rate, emulated)
    res.created, res.completed, res.lost, res.rejected = (
        everything.created, everything.completed, everything.lost, everything.rejected)
    res.error, res.error_reasons = everything.error, everything.error_reasons
    res.note = "fleet: delays on the testbed's clock, including the client hop"
    return res
