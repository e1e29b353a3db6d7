"""The demo bundle on three tiers (end device, edge, cloud) as a scenario the current scenario
format accepts, for ``plan --policy dimee|mlci`` and the replay tests.

Devices: ``end`` holds stage 1 (2e6 FLOP/s), ``edge`` stages 1..3 (1e7), ``cloud`` stages 1..4
(1e8); the source ``user/src`` sits on ``end``. Links: end -> edge 3.2e5 B/s, edge -> cloud
3.2e4 B/s, inside a device 1e12 B/s. Until the simulator has restart links (a task re-entering
stage 1 on another tier), the level-to-level links are written as h -> h+1 links between the
devices (``end/1 -> edge/2``, ``edge/3 -> cloud/4``); DIMEE and MLCI read only the devices'
capacities and the rate between them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from agent.policies.setting import Link, Scenario, Source, Stage, Worker
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile

LOCAL_RATE = 1.0e12
TIERS = (("end", 1, 2.0e6), ("edge", 3, 1.0e7), ("cloud", 4, 1.0e8))
RATES = {("end", "edge"): 3.2e5, ("edge", "cloud"): 3.2e4}


def tiered_demo_scenario(knobs: Optional[Dict[str, Any]] = None) -> Scenario:
    """The tiered demo setting with the shipped exit profile (format 2)."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    stages = tuple(Stage(float(s.flops), float(s.input_bytes), s.index in bundle.early_exit_stages)
                   for s in bundle.stages)
    workers = tuple(Worker("%s/%d" % (dev, h), h, cap, device=dev)
                    for dev, last, cap in TIERS for h in range(1, last + 1))
    links = [Link("user/src", "end/1", LOCAL_RATE)]
    links += [Link("%s/%d" % (dev, h), "%s/%d" % (dev, h + 1), LOCAL_RATE)
              for dev, last, _ in TIERS for h in range(1, last)]
    links += [Link("end/1", "edge/2", RATES[("end", "edge")]),
              Link("edge/3", "cloud/4", RATES[("edge", "cloud")])]
    return Scenario(stages, (Source("user/src", 2.5, device="end"),), workers, tuple(links),
                    0.5, None, load_exit_profile(bundle.exit_profile_path), dict(knobs or {}),
                    comment="demo bundle on end (1), edge (1..3) and cloud (1..4)")
