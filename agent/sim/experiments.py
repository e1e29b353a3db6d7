"""The paper's experiments on the simulator: one run, the sweep over capacity, per-slot series
(dynamic environment, threshold study). Each returns plain JSON-able rows; the rate sweep is
``simulate``'s main loop (it also writes per-task records)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from agent.policies.setting import Scenario
from agent.sim.engine import SimConfig, simulate
from agent.sim.environment import scale_capacities
from agent.policies.registry import make_sim_policy

log = logging.getLogger(__name__)
PolicyFactory = Callable[[str], Any]


def run_one(scenario: Scenario, policy_name: str, config: SimConfig,
            factory: Optional[PolicyFactory] = None) -> Dict[str, Any]:
    """Simulate one policy; returns its summary, per-slot series and the first slot's info."""
    policy = (factory or make_sim_policy)(policy_name)
    t0 = time.monotonic()
    result = simulate(scenario, policy, config)
    row: Dict[str, Any] = {"policy": policy_name}
    row.update(result.summary())
    first = result.slots[0]["info"] if result.slots else {}
    row["model_delay_s"] = first.get("model_delay_s")
    row["rounds"] = result.slots[0]["rounds"] if result.slots else 0
    row["wall_s"] = round(time.monotonic() - t0, 3)
    extra = policy.extra_summary(result, scenario)
    if extra:
        row["policy_summary"] = extra
    log.info("%s: mean delay %s s, accuracy %s, %d tasks (%.1f s)", policy_name,
             _fmt(row["mean_delay_s"]), _fmt(row["accuracy"]), row["tasks"], row["wall_s"])
    return {"row": row, "series": result.slot_series(), "result": result}


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else "%.4g" % x


def capacity_sweep(scenario: Scenario, policies: Sequence[str], scales: Sequence[float],
                   config: SimConfig, factory: Optional[PolicyFactory] = None) -> List[Dict]:
    """Delay and accuracy with every capacity scaled by 0.65x..1.5x (paper Figs. 5-6)."""
    rows = []
    for scale in scales:
        scn = scale_capacities(scenario, scale)
        for name in policies:
            row = run_one(scn, name, config, factory)["row"]
            row["capacity_scale"] = float(scale)
            rows.append(row)
    return rows


def slot_series(scenario: Scenario, policies: Sequence[str], config: SimConfig,
                factory: Optional[PolicyFactory] = None) -> Dict[str, List[Dict]]:
    """Per-slot delay and accuracy of every policy (dynamic mode: paper Figs. 7-9)."""
    out = {}
    for name in policies:
        res = run_one(scenario, name, config, factory)
        out[name] = res["series"]
    return out


def group_slots(series: List[Dict], size: int = 10) -> List[Dict]:
    """Tasks of ``size`` consecutive slots pooled into one group, as in the paper's Figs. 7-8."""
    groups = []
    for g in range(0, len(series), size):
        chunk = [s for s in series[g:g + size] if s["completed"]]
        n = sum(s["completed"] for s in chunk)
        if not n:
            continue
        mean = sum(s["mean_delay_s"] * s["completed"] for s in chunk) / n
        accs = [(s["accuracy"], s["completed"]) for s in chunk if s["accuracy"] is not None]
        acc = sum(a * c for a, c in accs) / sum(c for _, c in accs) if accs else None
        groups.append({"group": g // size + 1, "slots": len(chunk), "completed": n,
                       "mean_delay_s": mean, "accuracy": acc})
    return groups


def replace_config(config: SimConfig, **changes) -> SimConfig:
    """``config`` with some fields changed."""
    return dataclasses.replace(config, **changes)
