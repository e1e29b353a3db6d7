"""The demo bundle on three tiers (end device, edge, cloud) for ``plan --policy dimee|mlci`` and
the replay tests: the ``mlci-demo`` scenario (``agent.scenario.tiered``) with the given knobs.

Devices: ``end`` holds stage 1 (2e6 FLOP/s), ``edge`` stages 1..3 (1e7), ``cloud`` stages 1..4
(1e8); the source ``user/src`` sits on ``end``; restart links end -> edge at 3.2e5 B/s and edge
-> cloud at 3.2e4 B/s. DIMEE's planner reads only the stages, the profile and ``knobs.dimee``;
MLCI's reads the levels' capacities and the rates between them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from agent.policies.setting import Scenario
from agent.scenario.tiered import mlci_demo


def tiered_demo_scenario(knobs: Optional[Dict[str, Any]] = None) -> Scenario:
    """The tiered demo setting with the shipped exit profile (format 2)."""
    return mlci_demo(knobs=knobs)
