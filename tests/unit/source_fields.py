"""A source's node-config fields for the config tests (not a test module): loopback tcp binds
on free ports and one worker peer, w1, holding every stage; ``over`` replaces fields."""

from __future__ import annotations

import os

from agent.testbed.ports import free_ports
from engines.demo import DEMO_BUNDLE_DIR


def source_fields(base: str, **over) -> dict:
    """The fields (state under ``base``), with ``over`` in place of any."""
    c, d, pc, pd = free_ports(4)
    obj = {"node_id": "s1", "role": "source", "stage": 0, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": os.path.join(base, "state"), "security": "none",
           "control_bind": "tcp://127.0.0.1:%d" % c, "data_bind": "tcp://127.0.0.1:%d" % d,
           "drain_timeout_s": 1.0,
           "peers": [{"id": "w1", "stage": 1, "last_stage": 4,
                      "control_address": "tcp://127.0.0.1:%d" % pc,
                      "data_address": "tcp://127.0.0.1:%d" % pd}]}
    obj.update(over)
    return obj
