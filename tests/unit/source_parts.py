"""A source node's real parts for unit tests (not a test module): config, transport (built,
never bound), view, outbox and source side around a given policy; its one peer, w1, has not
been heard yet, so no successor is alive until a test says so."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import zmq

from agent.config.node import parse_config
from agent.policies.api import AgentPolicy
from agent.net.transport import Transport
from agent.node.book import RecordWriter, ReplaySet, SourceBook
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.source import SourceSide
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH
from tests.unit.endpoints import loopback_endpoints


def source_parts(state_dir, policy) -> SimpleNamespace:
    """cfg, ctx, transport, view, out, side and the records path; ``close()`` frees sockets."""
    ep = loopback_endpoints(("control", "data", "w1 control", "w1 data"))
    cfg = parse_config({
        "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR, "state_dir": str(state_dir),
        "control_bind": ep["control"], "data_bind": ep["data"],
        "peers": [{"id": "w1", "stage": 1, "control_address": ep["w1 control"],
                   "data_address": ep["w1 data"]}]})
    first = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    out = Outbox(cfg, transport, policy, view, Capacity())
    records = str(state_dir / "records.jsonl")
    side = SourceSide(cfg, out, policy, SourceBook("s1", RecordWriter(records)),
                      ReplaySet(REPLAY_PATH, first.input_shape, first.input_dtype))

    def close() -> None:
        transport.close()
        ctx.term()

    return SimpleNamespace(cfg=cfg, ctx=ctx, transport=transport, view=view, out=out, side=side,
                           records=records, close=close)


def serving_source(state_dir) -> Iterator[SimpleNamespace]:
    """A fixture's body: ``source_parts`` with the base policy and w1 alive, closed after."""
    p = source_parts(state_dir, AgentPolicy({}, {}))
    p.view.alive.add("w1")
    yield p
    p.close()
