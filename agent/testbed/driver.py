"""Runs every (policy, rate) pair of a testbed, locally or on a fleet, with a progress bar."""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional, Sequence

from agent.testbed.asrun import applied_links
from agent.testbed.fleet import run_fleet
from agent.testbed.local import TestbedSettings, bundle_stages, run_local
from agent.testbed.progress import Progress
from agent.testbed.report import RunResult
from agent.testbed.summary_capacity import unreachable_capacities
from agent.testbed.summary_window import WindowSnapshot
from agent.testbed.topology import Topology
from engines.bundle import BundleError, load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def load_bundle_for(topo: Topology):
    """The topology's bundle: ``demo`` is the bundle shipped inside the package."""
    if topo.bundle == "demo":
        return load_bundle(DEMO_BUNDLE_DIR)
    try:
        return load_bundle(topo.bundle)
    except BundleError as exc:  # the path alone does not say which file's "bundle" named it
        raise topo.error("bundle: %s" % exc) from None


def run_all(topo: Topology, bundle, policies: Sequence[str], rates: Sequence[float],
            settings: TestbedSettings, seed: int = 1, stream=None,
            on_result: Optional[Callable[[List[RunResult]], None]] = None) -> List[RunResult]:
    """Every policy at every rate (rates ascending within a policy); one ``RunResult`` each.

    Every policy gets the same seeds, so at a given rate the sources create the same arrival
    times and images for each policy (common random numbers: the policies differ, the load
    does not). ``on_result(results so far)`` is called after each (policy, rate), so a caller
    can write what finished before anything fails or is interrupted.

    A local run's model columns are recomputed over the sends after the warm-up
    (``summary_window``), and each result names the emulating workers that could not reach
    their capacity (``summary_capacity``), before ``on_result`` sees it.
    """
    stream = stream if stream is not None else sys.stderr
    rates = sorted(rates)
    bar = Progress(len(policies) * len(rates), stream=stream)
    results: List[RunResult] = []

    window: List[Optional[WindowSnapshot]] = [None]  # the policy running now (local runs)

    def done(r: RunResult) -> None:
        if window[0] is not None:
            window[0].apply(rates.index(r.rate) if r.rate in rates else -1, r)
            r.capacity_unreachable = unreachable_capacities(topo, window[0].run_dir)
        results.append(r)
        if on_result is not None:
            on_result(list(results))

    for k, policy in enumerate(policies):
        def tick(i: int, phase: str, frac: float, k=k, policy=policy) -> None:
            if window[0] is not None:
                window[0].tick(i, phase)
            bar.update(k * len(rates) + i + min(max(frac, 0.0), 1.0),
                       "%s @ %g/s: %s" % (policy, rates[i], phase))

        # a fleet's nodes keep their stats.json and logs on its devices: nothing to read here
        window[0] = None if topo.fleet is not None else WindowSnapshot(
            applied_links(topo, settings.network.plan if settings.network else None),
            bundle_stages(bundle), os.path.join(settings.out_dir, policy))
        if topo.fleet is not None:
            res = run_fleet(topo, bundle, policy, rates, settings, seed=seed, tick=tick,
                            on_result=done)
        else:
            res = run_local(topo, bundle, policy, rates, settings, seed=seed, tick=tick,
                            on_result=done)
        bar.update((k + 1) * len(rates), "%s: %s" % (policy, ", ".join(
            "%g/s %d/%d" % (r.rate, r.completed, r.created) for r in res)))
    bar.finish()
    return results
