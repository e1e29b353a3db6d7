"""A started agent serves its dropped-frame and engine-fallback counts at 0 from start-up.

Prometheus takes a series that first appears at N as its first sample: ``rate()`` and
``increase()`` never count those N. Real ``edge-agent run`` processes (a source and a stage-1
worker on loopback, real onnxruntime engines) are scraped over HTTP before any fault, then a
burst of malformed frames is sent to the worker's data socket with real ZeroMQ.
"""

from __future__ import annotations

import random
import urllib.request
from typing import Dict, Tuple

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from agent.ops.metrics import DROP_REASONS, SOURCE_DROPS, WORKER_DROPS
from agent.testbed.ports import free_ports
from engines.accelerator import FALLBACK_REASONS
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle
from tests.integration.test_faults import _junk_data

TIMEOUT_S = 120.0
Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _scrape(port: int) -> Samples:
    """{(sample name, sorted labels without node): value} of the endpoint on ``port``."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode("utf-8")
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "node")))] = \
                s.value
    return out


def _drops(got: Samples) -> Dict[str, float]:
    return {dict(k[1])["reason"]: v for k, v in got.items()
            if k[0] == "edge_agent_dropped_frames_total"}


def test_dropped_frames_and_engine_fallbacks_are_served_at_zero_from_start_up(bundle, tmp_path):
    """Rule: once started, a worker serves ``edge_agent_dropped_frames_total`` for every reason
    a worker drops for, and ``edge_agent_engine_fallbacks_total`` for its stage and every
    fallback cause (the causes that happened at 1, the others at 0); a source serves its own
    drop reasons; malformed frames then move those same series up, and no new dropped-frame
    series appears."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed")
    ports = dict(zip(("s1", "w1"), free_ports(2)))
    ctx = zmq.Context()
    try:
        c.start("w1", metrics_port=ports["w1"])
        c.start("s1", metrics_port=ports["s1"], arrival_rate_tasks_s=1.0, max_tasks=1)
        for n in ports:  # stats.json is written once the agent serves (its engines loaded)
            c.wait_for(lambda: c.stats(n) is not None, TIMEOUT_S, n + " up")
        worker, source = _scrape(ports["w1"]), _scrape(ports["s1"])
        assert sorted(_drops(worker)) == sorted(set(DROP_REASONS + WORKER_DROPS))
        assert set(_drops(worker).values()) == {0.0}
        assert sorted(_drops(source)) == sorted(set(DROP_REASONS + SOURCE_DROPS))
        fallbacks = {dict(k[1])["reason"]: v for k, v in worker.items()
                     if k[0] == "edge_agent_engine_fallbacks_total" and ("stage", "1") in k[1]}
        assert sorted(fallbacks) == sorted(FALLBACK_REASONS)
        assert set(fallbacks.values()) <= {0.0, 1.0}
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.ROUTING_ID, b"s1")  # speaks as s1, as its frames say
        dealer.connect(c.peer("w1").data_address)
        rng = random.Random(3)
        for i in range(80):
            dealer.send_multipart(_junk_data(rng, i))
        c.wait_for(lambda: (c.stats("w1") or {}).get("dropped", 0) >= 80, TIMEOUT_S,
                   "80 drops counted at w1")
        c.wait_for(lambda: sum(_drops(_scrape(ports["w1"])).values()) >= 80, TIMEOUT_S,
                   "80 drops served at w1")
        after = _drops(_scrape(ports["w1"]))
    finally:
        c.stop_all()
        ctx.destroy(linger=0)
    assert sorted(after) == sorted(_drops(worker))
    for reason in ("bad_header", "bad_version", "bad_shape", "bad_tensor", "unknown_source"):
        assert after[reason] > 0, (reason, after)
