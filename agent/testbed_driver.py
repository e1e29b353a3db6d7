"""Runs every (policy, rate) pair of a testbed, locally or on a fleet, with a progress bar."""

from __future__ import annotations

import sys
from typing import List, Sequence

from agent.testbed import TestbedSettings, run_local
from agent.testbed_report import Progress, RunResult
from agent.testbed_topology import Topology


def load_bundle_for(topo: Topology):
    """The topology's bundle: ``demo`` is the bundle shipped inside the package."""
    from engines.bundle import load_bundle

    if topo.bundle == "demo":
        from engines.demo import DEMO_BUNDLE_DIR

        return load_bundle(DEMO_BUNDLE_DIR)
    return load_bundle(topo.bundle)


def run_all(topo: Topology, bundle, policies: Sequence[str], rates: Sequence[float],
            settings: TestbedSettings, seed: int = 1, stream=None) -> List[RunResult]:
    """Every policy at every rate (rates ascending within a policy); one ``RunResult`` each."""
    stream = stream if stream is not None else sys.stderr
    pairs = [(p, r) for p in policies for r in sorted(rates)]
    bar = Progress(len(pairs), stream=stream)
    results: List[RunResult] = []
    for i, (policy, rate) in enumerate(pairs):
        label = "%s @ %g/s" % (policy, rate)

        def tick(phase: str, frac: float, i=i, label=label) -> None:
            bar.update(i + min(max(frac, 0.0), 1.0), "%s: %s" % (label, phase))

        if topo.fleet is not None:
            from agent.testbed_fleet import run_fleet

            res = run_fleet(topo, bundle, policy, rate, settings, seed=seed + i, tick=tick)
        else:
            res = run_local(topo, bundle, policy, rate, settings, seed=seed + i, tick=tick)
        results.append(res)
        bar.update(i + 1, "%s: %d/%d completed" % (label, res.completed, res.created))
    bar.finish()
    return results
