"""A topology's links as a run applies them, for what the run prints and the columns that model it.

On loopback the senders pace each link at the rate their node config gives it
(``config_rate_bytes_s`` when the topology sets one, else ``rate_bytes_s``), and nothing when no
link has a rate; under ``--network netns`` the kernel shapes every link between two devices at
its topology rate, and none between agents of one device (that device's loopback). A fleet's
agents run as rendered. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from agent.testbed.netns import NetPlan
from agent.testbed.topology import Topology


def one_device_links(topo: Topology, plan: NetPlan) -> List:
    """The topology's links between agents of one device: they run over its loopback, so the
    kernel shapes none of them (no rate, delay or loss) and ``plan.shaped`` has none."""
    return [l for l in topo.links
            if plan.device_of(l.src).index == plan.device_of(l.dst).index]


def told_rate(link) -> Optional[float]:
    """The rate a link's agents are given (the one its sender paces at on loopback): its
    ``config_rate_bytes_s`` when set, else its ``rate_bytes_s``."""
    return link.config_rate_bytes_s if link.config_rate_bytes_s is not None else link.rate_bytes_s


def senders_pace(topo: Topology) -> bool:
    """Whether a loopback run's senders pace their links: when any link has a rate."""
    return any(l.rate_bytes_s is not None for l in topo.links)


def applied_links(topo: Topology, plan: Optional[NetPlan] = None) -> Topology:
    """``topo`` with each link's rate, delay and loss as the run applies them: on loopback
    (``plan`` None) the rate the senders pace at (``told_rate``, and none at all unless
    ``senders_pace``); on a netns ``plan`` nothing on a link between agents of one device (its
    loopback)."""
    if topo.fleet is not None:  # a fleet's agents: as rendered (``emulation_line`` says)
        return topo
    if plan is None:
        paced = senders_pace(topo)
        links = [dataclasses.replace(l, rate_bytes_s=told_rate(l) if paced else None)
                 for l in topo.links]
    else:
        inside = one_device_links(topo, plan)
        links = [dataclasses.replace(l, rate_bytes_s=None, delay_ms=0.0, loss=0.0)
                 if l in inside else l for l in topo.links]
    return dataclasses.replace(topo, links=tuple(links))
