"""The simulator's event loop: Poisson sources, processor-sharing workers, hop delays, slots.

One ``heapq`` of events ``(time_s, seq, kind, a, b)``; new tasks come from per-slot arrival
arrays (``environment.slot_arrivals``) through a pointer instead of the heap. A worker is a
server of capacity mu FLOP/s: with ``discipline="ps"`` every task in it gets mu/n (the paper's
M/D/1-PS, kept in virtual time so one arrival or departure costs O(log n)); with ``"fifo"`` the
head of the line gets all of it. A hop i -> j costs beta/r_ij (``link_model="delay"``) or goes
through the link, a server of r_ij bytes/s of wire bytes (``"shared"``). Stale departure events
are skipped by a per-server version number.

The loop reads its topology, routing and thresholds from the running ``agent.sim.engine.Simulator``
and hands it to the policy's hooks as their live view; it keeps its queues in local lists and
closures (one flat loop, for speed).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections import deque
from typing import Any, Dict, List, Optional

from agent.policies.model import hop_bytes
from agent.policies.sim_api import Decision, SlotView
from agent.policies.splits import nonempty_rows
from agent.sim.environment import slot_arrivals, slot_scenario
from agent.sim.results import SimResult
from engines.exit_profile import should_exit

_DEP, _ARR, _SLOT, _APPLY, _TICK = 0, 1, 2, 3, 4


def run_events(sim: Any) -> SimResult:  # noqa: C901 - one loop kept flat for speed
    """Simulate ``sim`` (an ``agent.sim.engine.Simulator``, not imported here: it imports this
    module) from time 0 to the end of its drain; its per-task records and per-slot decisions."""
    cfg, sc, policy = sim.config, sim.base, sim.policy
    S, G, H = sim._S, sim._G, sc.num_stages
    profile = sc.exit_profile
    rnd = random.Random(cfg.seed * 7919 + 17).random
    expo = random.Random(cfg.seed * 104729 + 3).expovariate
    shared = cfg.link_model == "shared"
    ps = cfg.discipline == "ps"
    exponential = cfg.service == "exponential"
    # servers: devices 0..G-1 (one per worker unless workers share a device), then one per
    # link (used only when shared); loc[k] is the worker task k is at
    server = sim.server
    nsrv = G + len(sc.links)
    mu = [0.0] * G + [l.rate for l in sc.links]
    for w_i, w in enumerate(sc.workers):
        mu[server[w_i]] = w.capacity
    sim._mu = mu
    wflops = [sc.stages[w.stage - 1].flops for w in sc.workers]
    work = [0.0] * G + [float(hop_bytes(sc.stages[sim.stage[sim.index[l.dst]] - 1].input_bytes,
                                        cfg.link_model)) for l in sc.links]  # wire bytes
    link_dst = [sim.index[l.dst] - S for l in sc.links]
    loc: Dict[int, int] = {}
    V, tl, ver = [0.0] * nsrv, [0.0] * nsrv, [0] * nsrv
    nj = sim.njobs
    jobs: List[Any] = [[] if ps else deque() for _ in range(nsrv)]
    if profile is not None:
        col = {st: c for c, st in enumerate(profile.exit_stages)}
        exit_col = [-1] + [col.get(h, -1) if h < H else -1 for h in range(1, H + 1)]
        conf = [profile.confidence[:, c].tolist() for c in range(len(profile.exit_stages))]
        nsamples = profile.num_samples
    else:
        rem = [1.0] + list(sc.remaining)
        exit_col = [-1] + [0 if sc.stages[h - 1].exit and h < H else -1 for h in range(1, H + 1)]
        nsamples = 1
    thr = sim.thresholds
    per_task, pnt = policy.per_task, policy.per_node_thresholds
    hook, answer_hook, term = policy.per_task_exit, policy.per_task_answer, sim.terminal
    head = [False] + [s.exit for s in sc.stages[:-1]] + [True]
    row_set = cfg.sample_rows if cfg.sample_rows is not None else policy.sample_rows
    rows = None if row_set is None else nonempty_rows(
        row_set, nsamples, "sample_rows" if cfg.sample_rows is not None
        else "policy %r (its sample_rows)" % policy.name, profile is not None)
    answered: Dict[int, int] = {}
    answers: Dict[int, Optional[bool]] = {}
    admission = policy.admission
    succ, hop_s, lsrv, cum, names = sim.succ, sim.hop_s, sim.link_server, sim.cum, sim.names
    stage, hold = sim.stage, sim.hold
    created: List[float] = []
    src: List[int] = []
    sample: List[int] = []
    sim._created, sim._src, sim._sample = created, src, sample
    done: Dict[int, float] = {}
    exit_stage: Dict[int, int] = {}
    rejected: List[int] = []
    heap: List[Any] = []
    push, pop = heapq.heappush, heapq.heappop
    seq = itertools.count()
    slots: List[Dict[str, Any]] = []
    decisions: List[Decision] = []
    current: List[Optional[Decision]] = [None]

    def serve(s: int, k: int, t: float, w: float) -> None:
        if exponential:
            w *= expo(1.0)
        n = nj[s]
        if ps:
            if n:
                V[s] += (t - tl[s]) * mu[s] / n
            tl[s] = t
            q = jobs[s]
            heapq.heappush(q, (V[s] + w, k))
            n += 1
            nj[s] = n
            ver[s] += 1
            push(heap, (t + (q[0][0] - V[s]) * n / mu[s], next(seq), _DEP, s, ver[s]))
        else:
            jobs[s].append((w, k))
            nj[s] = n + 1
            if n == 0:
                V[s], tl[s] = 0.0, t
                ver[s] += 1
                push(heap, (t + w / mu[s], next(seq), _DEP, s, ver[s]))

    def depart(s: int, t: float) -> int:
        n = nj[s]
        q = jobs[s]
        if ps:
            V[s] += (t - tl[s]) * mu[s] / n
            tl[s] = t
            k = heapq.heappop(q)[1]
            n -= 1
            if n:
                ver[s] += 1
                push(heap, (t + max(q[0][0] - V[s], 0.0) * n / mu[s], next(seq), _DEP, s, ver[s]))
        else:
            k = q.popleft()[1]
            n -= 1
            if n:
                V[s], tl[s] = 0.0, t
                ver[s] += 1
                push(heap, (t + q[0][0] / mu[s], next(seq), _DEP, s, ver[s]))
        nj[s] = n
        return k

    def set_capacity(s: int, cap: float, t: float) -> None:
        n = nj[s]
        if n:
            V[s] += (t - tl[s]) * mu[s] / (n if ps else 1)
            tl[s] = t
        mu[s] = cap
        if n:
            ver[s] += 1
            left = (jobs[s][0][0] - V[s]) * n if ps else jobs[s][0][0] - V[s]
            push(heap, (t + max(left, 0.0) / cap, next(seq), _DEP, s, ver[s]))

    def arrive(j: int, k: int, t: float) -> None:
        loc[k] = j
        serve(server[j], k, t, wflops[j])

    def dispatch(i: int, x: int, k: int, t: float) -> None:
        if shared:
            serve(lsrv[i][x], k, t, work[lsrv[i][x]])
        else:
            push(heap, (t + hop_s[i][x], next(seq), _ARR, succ[i][x], k))

    def forward(i: int, k: int, t: float) -> None:
        if per_task:
            sim.now_s = t
            dst = policy.route(names[i], k, sim)
            if dst is None:
                hold[i].append(k)
                return
            dispatch(i, sim.succ_pos[i][dst], k, t)
            return
        c = cum[i]
        if len(c) == 1:
            dispatch(i, 0, k, t)
        else:
            dispatch(i, min(bisect.bisect_right(c, rnd()), len(c) - 1), k, t)

    def apply(decision: Decision) -> None:
        sim._apply(decision)
        current[0] = decision

    end_arrivals = cfg.duration_s
    t_stop = cfg.duration_s + cfg.drain_limit_s
    push(heap, (0.0, next(seq), _SLOT, 0, 0))
    if policy.tick_s:
        push(heap, (policy.tick_s, next(seq), _TICK, 0, 0))
    at: List[float] = []
    asrc: List[int] = []
    asamp: List[int] = []
    ai = 0
    inflight = 0
    while True:
        if ai < len(at) and (not heap or at[ai] <= heap[0][0]):
            t = at[ai]
            k = len(created)
            s = asrc[ai]
            created.append(t)
            src.append(s)
            sample.append(asamp[ai])
            ai += 1
            if admission:
                sim.now_s = t
                if not policy.admit(names[s], k, sim):
                    rejected.append(k)
                    continue
            inflight += 1
            forward(s, k, t)
            continue
        if not heap:
            break
        t, _, kind, a, b = pop(heap)
        if t > t_stop:
            break
        if kind == _DEP:
            if b != ver[a]:
                continue
            k = depart(a, t)
            if a >= G:  # a shared link delivered the features to its receiver
                arrive(link_dst[a - G], k, t)
                continue
            i = S + loc.pop(k)
            h = stage[i]
            if h < H and not term[i]:
                c = exit_col[h]
                leave = False
                if c >= 0:
                    if hook:
                        sim.now_s = t
                        leave = policy.on_head(names[i], k, h, sim)
                    elif profile is not None:
                        th = policy.threshold(names[i], h, sim) if pnt else thr[h]
                        leave = should_exit(conf[c][sample[k]], th)
                    else:
                        leave = rnd() >= rem[h]
                if not leave:
                    forward(i, k, t)
                    continue
            elif hook and head[h]:  # the last stage or a terminal worker: answered anyway
                sim.now_s = t
                policy.on_head(names[i], k, h, sim)
            done[k] = t
            exit_stage[k] = h
            answered[k] = i - S
            if answer_hook:
                sim.now_s = t
                answers[k] = policy.answer_correct(names[i], k, h, sim)
            inflight -= 1
        elif kind == _ARR:
            arrive(a - S, b, t)
        elif kind == _SLOT:
            scn = slot_scenario(sc, a, cfg.dynamic, cfg.seed)
            for w_i, w in enumerate(scn.workers):
                if w.capacity != mu[server[w_i]]:
                    set_capacity(server[w_i], w.capacity, t)
            sim.scenario = scn
            sim.now_s = t
            end = min(t + cfg.slot_s, end_arrivals)
            ta, sa, ma = slot_arrivals(scn, t, end, cfg.seed, a, nsamples, rows)
            at, asrc, asamp, ai = ta.tolist(), sa.tolist(), ma.tolist(), 0
            decision = policy.start_slot(SlotView(a, t, scn, current[0], cfg.seed))
            decisions.append(decision)
            delay = max(0, int(decision.rounds)) * cfg.round_delay_s
            if a == 0 and cfg.configured_start:
                delay = 0.0
            slots.append({"slot": a, "start_s": t, "rounds": int(decision.rounds),
                          "config_s": delay, "info": dict(decision.info),
                          "rates": [s_.rate for s_ in scn.sources],
                          "capacities": [w.capacity for w in scn.workers]})
            if delay > 0:
                push(heap, (t + delay, next(seq), _APPLY, len(decisions) - 1, 0))
            else:
                apply(decision)
            slots[-1]["thresholds"] = {str(h_): c_ for h_, c_ in thr.items()}
            if t + cfg.slot_s < end_arrivals:
                push(heap, (t + cfg.slot_s, next(seq), _SLOT, a + 1, 0))
        elif kind == _APPLY:
            apply(decisions[a])
            slots[a]["thresholds"] = {str(h_): c_ for h_, c_ in thr.items()}
        else:  # _TICK
            sim.now_s = t
            policy.on_tick(sim)
            for i, q in enumerate(hold):
                while q:
                    dst = policy.route(names[i], q[0], sim)
                    if dst is None:
                        break
                    dispatch(i, sim.succ_pos[i][dst], q.popleft(), t)
            if t < end_arrivals or inflight > 0:
                push(heap, (t + policy.tick_s, next(seq), _TICK, 0, 0))
    return SimResult.build(sim, created, src, sample, done, exit_stage, rejected, slots,
                           answered, answers)

