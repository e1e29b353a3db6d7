"""A real stage-1 worker node for unit tests (not a test module): built by
``agent.node.build.build`` from a testbed config of a four-stage chain (s1 -> w1a -> w2a ->
w3a -> w4a), its sockets never bound; tests hand its loop messages as its transport would."""

from __future__ import annotations

import contextlib
import dataclasses
import select
import time
from typing import Iterable

from agent.node.build import build
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

CHAIN = ["w1a", "w2a", "w3a", "w4a"]


def built_worker(run_dir: str, node: str = "w1a", **over):
    """The ``BuiltNode`` of ``node`` (its config's fields ``over`` replaced); the caller closes
    it."""
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": w, "stage": h} for h, w in enumerate(CHAIN, start=1)],
        "links": [{"from": a, "to": b} for a, b in zip(["s1"] + CHAIN, CHAIN)]})
    cfg = node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0,
                       run_dir)[node]
    return build(dataclasses.replace(cfg, **over))


@contextlib.contextmanager
def clocked_worker(run_dir: str, node: str = "w1a", alive: Iterable[str] = (), **over):
    """``(node, role, outbox, clock)`` of a started ``built_worker`` whose loop, role and outbox
    read ``clock[0]``, which starts at the real monotonic time (the inference thread's clock:
    its jobs never look expired); ``alive`` are the neighbours its view counts alive."""
    built = built_worker(run_dir, node, **over)
    loop, role = built.node, built.node.role
    role.out.view.alive.update(alive)
    built.runner.start()
    clock = [time.monotonic()]
    role.clock = role.out.clock = loop.clock = lambda: clock[0]
    try:
        yield loop, role, role.out, clock
    finally:
        built.close()


def settle(role) -> None:
    """Carry out every job handed to the engine (waits end when the thread has answered)."""
    while role.runner.queued or role.backlog:
        ready, _, _ = select.select(role.wake_fds(), [], [], 30.0)
        assert ready, "the inference thread gave no result within 30 s"
        role.on_fd(ready[0])
