"""Driving a fleet that already runs: push load into its sources, time every task's answer.

A topology with a ``fleet`` object names, for every source, the endpoint where that source
takes tasks from a local client (its config has ``arrival = "client"`` and ``client_bind``)::

    "fleet": {"policy": "dtoee",
              "clients": {"cam1": "tcp://10.0.0.21:5560", "cam2": "tcp://10.0.0.22:5560"},
              "replay": "/data/replay.npz", "result_timeout_s": 70}

The testbed starts nothing there. For each rate it connects one DEALER per source, sends TASK
messages (images from the replay set) at Poisson times with the source's share of the rate,
and receives the RESULT the source returns for each; the client's own clock gives the delay and
the replay labels give the accuracy. A task without an answer after ``result_timeout_s`` (make
it longer than the sources' ``result_timeout_s * max_attempts``) counts as lost. The fleet runs
one policy; comparing another means restarting the fleet with it, so ``--policies`` may only
name the fleet's policy. Worker capacities are those of the devices: the model column is
filled only when the topology states every worker's capacity (``emulate_capacity_flops``).
"""

from __future__ import annotations

import random
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import zmq

from agent.errors import UsageError
from agent.protocol import wire
from agent.testbed.report import RunResult, summarise_records
from agent.testbed.topology import Topology, TopologyError
from engines.demo import REPLAY_PATH


def fleet_settings(topo: Topology) -> dict:
    """Validate the topology's ``fleet`` object; returns it with defaults filled in."""
    f = dict(topo.fleet or {})
    unknown = sorted(set(f) - {"policy", "clients", "replay", "result_timeout_s", "comment"})
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
    t = f.get("result_timeout_s", 70.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise TopologyError("fleet.result_timeout_s: must be > 0 seconds, got %r" % (t,))
    f["result_timeout_s"] = float(t)
    return f


def _replay(path: Optional[str]):
    if not path:
        path = REPLAY_PATH
    try:
        with np.load(path) as z:
            return np.ascontiguousarray(z["x"]), np.asarray(z["y"]).astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError("fleet.replay: cannot read x and y from %s: %s" % (path, exc))


def drive(clients: Dict[str, str], shares: Dict[str, float], total_rate: float, load_s: float,
          x: np.ndarray, y: np.ndarray, result_timeout_s: float, seed: int = 0,
          tick: Optional[Callable[[str, float], None]] = None) -> List[dict]:
    """Push Poisson load into each source's client socket; one record per task."""
    tick = tick or (lambda phase, frac: None)
    rng = random.Random(seed)
    ctx = zmq.Context()
    socks = {}
    pending: Dict[str, dict] = {}
    records: List[dict] = []
    try:
        poller = zmq.Poller()
        for sid, ep in clients.items():
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
            socks[sid] = s
            poller.register(s, zmq.POLLIN)
        t0 = time.monotonic()
        nxt = {sid: t0 + rng.expovariate(shares[sid] * total_rate) for sid in clients}
        seq = 0
        while True:
            now = time.monotonic()
            for sid, due in list(nxt.items()):
                if due is None or due > now:
                    continue
                if due - t0 >= load_s:
                    nxt[sid] = None
                    continue
                i = rng.randrange(len(x))
                seq += 1
                tid = "tb-%d" % seq
                fields = {"id": tid, "source": sid, "stage": 1, "attempt": 0,
                          "created": time.time(), "hops": 0, "resends": 0}
                socks[sid].send_multipart(wire.encode(wire.Kind.TASK, "testbed", fields,
                                                      [x[i:i + 1]]), copy=False)
                pending[tid] = {"id": tid, "source": sid, "status": "lost",
                                "created_mono": now, "label": int(y[i])}
                nxt[sid] = due + rng.expovariate(shares[sid] * total_rate)
            for sock, _ in poller.poll(20):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = wire.decode(frames)
                    except wire.WireError:
                        continue
                    rec = pending.pop(msg.fields.get("id"), None)
                    if msg.kind != wire.Kind.RESULT or rec is None:
                        continue
                    rec.update(status="completed", finished_mono=time.monotonic(),
                               exit_stage=msg.fields["exit_stage"], cls=msg.fields["cls"],
                               correct=msg.fields["cls"] == rec["label"])
                    records.append(rec)
            now = time.monotonic()
            loading = any(v is not None for v in nxt.values())
            if not loading and (not pending or now - t0 > load_s + result_timeout_s):
                break
            done = len(records) / float(max(1, len(records) + len(pending)))
            tick("load" if loading else "draining", min(now - t0, load_s) / load_s * done)
    finally:
        for s in socks.values():
            s.close(0)
        ctx.term()
    return records + list(pending.values())


def run_fleet(topo: Topology, bundle, policy: str, rates: Sequence[float], settings,
              seed: int = 0, tick: Optional[Callable[[int, str, float], None]] = None
              ) -> List[RunResult]:
    """One ``RunResult`` per rate for the fleet's policy (see the module docstring)."""
    f = fleet_settings(topo)
    if policy != f["policy"]:
        raise UsageError("--policies: the fleet runs %r; restart it with another policy to "
                         "compare (got %r)" % (f["policy"], policy))
    x, y = _replay(f.get("replay"))
    shares = {s.id: s.share for s in topo.sources}
    load_s = topo.warmup_s + settings.duration_s
    out = []
    for i, rate in enumerate(rates):
        recs = drive(f["clients"], shares, rate, load_s, x, y, f["result_timeout_s"],
                     seed=seed * 100 + i,
                     tick=lambda phase, frac, i=i: (tick or (lambda *a: None))(i, phase, frac))
        t_first = min((r["created_mono"] for r in recs), default=0.0)
        measured = [r for r in recs if r["created_mono"] - t_first >= topo.warmup_s]
        res = summarise_records(measured, policy, rate, topo.capacities_emulated,
                                duration_s=settings.duration_s)
        everything = summarise_records(recs, policy, rate, topo.capacities_emulated)
        res.created, res.completed, res.lost, res.rejected = (
            everything.created, everything.completed, everything.lost, everything.rejected)
        res.note = "fleet: delays on the testbed's clock, including the client hop"
        out.append(res)
    return out
