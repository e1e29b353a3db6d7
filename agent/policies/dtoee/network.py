"""Synchronous whole-network DTO-EE (Alg. 3) for ``plan``, the simulator and tests.

Runs exactly the protocol of ``agent.policies.dtoee`` (round t: RURs carry p^t and the
offloaders' previous arrival rates, RUSs the receivers' loads and their previous Omega, then
every offloader steps), but on all nodes at once: the per-node maths (``update_rows``) is applied
to every offloader row of the padded successor table in one call, so hundreds of rounds on a
paper-sized network take milliseconds. ``tests/unit/test_dtoee_protocol.py`` checks that it
matches a message-by-message run of the per-node functions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Mapping, Optional

import numpy as np

from agent.policies.dtoee.joint import StageReport, joint_routing, joint_row, stage_problem
from agent.policies.dtoee.knobs import DtoeeParams, parse_knobs
from agent.policies.dtoee.steps import adapt_damping, initial_damping, row_marginals, update_rows
from agent.policies.model import (
    PolicyResult,
    accuracy_range,
    compile_network,
    make_result,
    network_delay,
    node_rates,
    routing_vector,
    stage_remaining,
    uniform_routing,
)
from agent.policies.thresholds import ThresholdReport, choose_threshold, threshold_stage
from agent.policies.setting import Scenario
from engines.exit_profile import exit_stats

SETTLE = 10  # rounds over which an unchanged model delay counts as converged


def run_dtoee(scenario: Scenario, rounds: Optional[int] = None,
              params: Optional[DtoeeParams] = None,
              thresholds: Optional[Mapping[int, float]] = None,
              initial_routing: Optional[Mapping[str, Mapping[str, float]]] = None,
              stop_when_converged: bool = True, track: bool = False) -> PolicyResult:
    """Run DTO-EE on the whole network for ``rounds`` rounds (default ``params.rounds``).

    ``params`` defaults to ``parse_knobs(scenario.knobs)``. With an exit profile, thresholds
    start at ``thresholds`` (default ``initial_threshold`` for every exit) and are tuned every
    ``m`` rounds; with fixed ``remaining`` only the routing moves. ``initial_routing`` defaults
    to uniform (the paper's start). Converged: no probability moved more than ``tolerance`` in a
    round, or the model delay changed by at most ``tolerance``/100 (relative) over the last
    ``SETTLE`` rounds, and no threshold changed in the last full threshold cycle; it then stops
    unless ``stop_when_converged`` is False. ``track`` records the model delay after every round in
    ``PolicyResult.history``.
    """
    params = params or parse_knobs(scenario.knobs)
    rounds = params.rounds if rounds is None else rounds
    net = compile_network(scenario)
    # the scenario's link model is the one eq. 8 is evaluated in: the steps must use it too
    params = dataclasses.replace(params, link_model=net.link_model)
    profile = scenario.exit_profile
    exits = profile.early_exit_stages if profile is not None else ()
    if profile is not None:
        th = {h: params.initial_threshold for h in exits}
        th.update({int(k): float(v) for k, v in (thresholds or {}).items()})
        rem = exit_stats(profile, th).remaining
        bounds = accuracy_range(profile)
    else:
        th, rem, bounds = {}, np.asarray(scenario.remaining, dtype=np.float64), None
    p = routing_vector(net, initial_routing) if initial_routing else uniform_routing(net)

    valid = net.slots >= 0
    e = np.where(valid, net.slots, 0)
    row_node = net.offloaders
    row_stage = net.stage[row_node]
    dst = net.edge_dst[e]
    next_flops = net.flops[row_stage + 1]
    next_bytes = net.input_bytes[row_stage + 1]
    link = net.edge_rate[e]
    n = len(net.ids)
    npred = np.bincount(net.edge_dst, minlength=n).astype(np.float64)
    workers = net.stage > 0
    alpha = np.where(workers, net.flops[net.stage], 1.0)

    phi_prev = node_rates(net, p, rem)  # round 0's RURs use the rates of the initial routing
    stage_rows = [np.nonzero(row_stage == h)[0] for h in range(net.num_stages)]
    lam_prev = None
    prev_step = np.zeros(valid.shape)
    change_prev = np.zeros(n)
    kappa = initial_damping(npred, params.step == "joint")
    delays: List[float] = []
    quiet_needed = params.m * max(1, len(exits)) if exits else 0
    last_th_change = -1
    converged = False
    t = 0
    for t in range(rounds):
        remv = stage_remaining(rem)
        # RUR wave: every offloader's request, from its routing and its previous arrival rate
        xi = p * phi_prev[net.edge_src] * remv[net.stage[net.edge_src]] \
            * net.flops[net.stage[net.edge_dst]]
        lam = np.bincount(net.edge_dst, weights=xi, minlength=n)
        phi = np.where(workers, lam / alpha, net.source_rate)
        if lam_prev is not None:
            change = lam - lam_prev
            kappa = adapt_damping(change, change_prev, kappa, npred, net.capacity)
            change_prev = change
        lam_prev = lam
        # RUS wave, from the final stage back: each worker steps as an offloader, then answers
        omega = np.zeros(n)
        psi = np.zeros(n)
        prow = np.where(valid, p[e], 0.0)
        new = prow.copy()
        delta = np.zeros_like(prow)
        for h in range(net.num_stages - 1, -1, -1):
            rows = stage_rows[h]
            if len(rows) == 0:
                continue
            d = dst[rows]
            if params.step == "joint":
                new[rows], delta[rows], omega[row_node[rows]], psi[row_node[rows]] = _joint(
                    net, rows, prow, valid, phi[row_node[rows]] * remv[h], remv[h], lam, omega,
                    psi, kappa, npred, params, (phi - phi_prev)[row_node[rows]])
                continue
            new[rows], delta[rows], omega[row_node[rows]], psi[row_node[rows]] = update_rows(
                prow[rows], phi[row_node[rows]] * remv[h], remv[row_stage[rows]],
                next_flops[rows], next_bytes[rows], link[rows], lam[d], net.capacity[d],
                omega[d], psi[d], npred[d], kappa[d], valid[rows], params,
                (phi - phi_prev)[row_node[rows]], prev_step[rows])
        prev_step = np.where(valid, new - prow, 0.0)
        moved = float(np.max(np.abs(new - prow)[valid])) if valid.any() else 0.0
        p = p.copy()
        p[e[valid]] = new[valid]
        phi_prev = phi
        h = threshold_stage(t, params.m, exits, params.first_threshold_round)
        if h is not None:
            rows = np.nonzero(row_stage == h)[0]
            g = np.sum(prow[rows] * np.where(valid[rows], delta[rows], 0.0), axis=1)
            reports = [ThresholdReport(net.ids[row_node[r]], t, h, float(phi[row_node[r]]),
                                       float(gr)) for r, gr in zip(rows, g)]
            new_th = choose_threshold(h, th, reports, net.total_rate, profile,
                                      scenario.tradeoff, params.threshold_step, bounds)
            if new_th != th:
                th, last_th_change = new_th, t
                rem = exit_stats(profile, th).remaining
        delays.append(network_delay(net, p, rem))
        # settled: nothing moves, or the routing only circles at a delay that no longer changes
        # (a residual oscillation of a few sources that is worth nothing)
        flat = len(delays) > SETTLE and math.isfinite(delays[-1]) \
            and abs(delays[-1] - delays[-1 - SETTLE]) <= 0.01 * params.tolerance * delays[-1]
        converged = (moved < params.tolerance or flat) and t - last_th_change >= quiet_needed
        if converged and stop_when_converged:
            break
    return make_result("dtoee", scenario, net, p, th if profile is not None else None,
                       t + 1, converged, delays if track else None)


def _joint(net, rows, prow, valid, out_rate, remaining, lam, omega, psi, kappa, npred, params,
           pending):
    """The joint step of one stage's offloader ``rows``: their ``StageReport``s as the agents
    build them, then the same ``stage_problem`` / ``joint_routing`` / ``joint_row`` calls.
    Returns (new p rows, Delta rows, Omega_i, Psi_i) as ``update_rows`` does."""
    e = np.where(valid, net.slots, 0)
    h = int(net.stage[net.offloaders[rows[0]]])
    flops, size = float(net.flops[h + 1]), float(net.input_bytes[h + 1])
    reports = []
    for k, r in enumerate(rows):
        slots = np.flatnonzero(valid[r])
        succ = [net.ids[net.edge_dst[e[r, c]]] for c in slots]
        dst = [int(net.edge_dst[e[r, c]]) for c in slots]
        reports.append(StageReport(
            net.ids[net.offloaders[r]], 0, float(out_rate[k]),
            dict(zip(succ, (float(prow[r, c]) for c in slots))),
            dict(zip(succ, (float(net.edge_rate[e[r, c]]) for c in slots))),
            dict(zip(succ, (float(lam[d]) for d in dst))),
            dict(zip(succ, (float(net.capacity[d]) for d in dst))),
            dict(zip(succ, (float(omega[d]) for d in dst))),
            dict(zip(succ, (float(psi[d]) for d in dst))),
            dict(zip(succ, (float(kappa[d]) for d in dst))),
            dict(zip(succ, (float(npred[d]) for d in dst)))))
    prob = stage_problem(reports, flops, size, params)
    routing, loads = joint_routing(prob, params)
    by_id = dict(zip(prob.offloaders, routing))
    shape = (len(rows), valid.shape[1])
    new, delta = np.zeros(shape), np.full(shape, np.inf)
    om, ps = np.zeros(len(rows)), np.zeros(len(rows))
    for k, (r, rep) in enumerate(zip(rows, reports)):
        mine = by_id[rep.sender]
        dl, om[k], ps[k] = joint_row(rep, mine, loads, remaining, flops, size, params,
                                     float(pending[k]))
        for c in np.flatnonzero(valid[r]):
            j = net.ids[net.edge_dst[e[r, c]]]
            new[k, c], delta[k, c] = mine[j], dl[j]
    return new, delta, om, ps


def exact_marginals(net, p: np.ndarray, remaining, params: DtoeeParams):
    """Delta_ij (eq. 15) of every edge with exact Omega (a backward pass over the stages).

    Returns ``(delta (E,), omega (N,), phi (N,))``: what the protocol's values settle to when the
    routing stays put. Used by the baselines' threshold tuning and by the tests' KKT checks.
    The links follow ``net.link_model``.
    """
    params = dataclasses.replace(params, link_model=net.link_model)
    rem = np.asarray(remaining, dtype=np.float64)
    remv = stage_remaining(rem)
    n = len(net.ids)
    phi = node_rates(net, p, rem)
    lam = net.flops[net.stage] * phi
    valid = net.slots >= 0
    e = np.where(valid, net.slots, 0)
    row_node = net.offloaders
    row_stage = net.stage[row_node]
    dst = net.edge_dst[e]
    omega = np.zeros(n)
    psi = np.zeros(n)
    delta = np.zeros(net.num_edges)
    for h in range(net.num_stages - 1, -1, -1):
        rows = np.nonzero(row_stage == h)[0]
        if len(rows) == 0:
            continue
        v = valid[rows]
        d = dst[rows]
        dl, _, om, ps = row_marginals(
            np.where(v, p[e[rows]], 0.0), np.full(len(rows), remv[h]),
            net.flops[h + 1] * np.ones(len(rows)), net.input_bytes[h + 1] * np.ones(len(rows)),
            net.edge_rate[e[rows]], lam[d], net.capacity[d], omega[d], psi[d], v, params,
            phi[row_node[rows]] * remv[h])
        omega[row_node[rows]] = om
        psi[row_node[rows]] = ps
        delta[e[rows][v]] = dl[v]
    return delta, omega, phi
