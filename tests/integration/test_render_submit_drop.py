"""``submit`` told a ``--max-message-bytes`` above what the source really takes: a message over
about twice the source's ``max_message_bytes`` makes ZeroMQ drop the connection, so no answer
comes, and submit names that as the likely cause (not ``--timeout`` or another wire protocol),
one input at a time and at ``--rate`` alike.
A real source agent on loopback with the node config's default limit."""

from __future__ import annotations

import os

import numpy as np
import pytest

from agent import cli
from agent.config.node import DEFAULT_MAX_MESSAGE_BYTES
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(client endpoint, cluster) of a running client-mode source (default
    max_message_bytes)."""
    root = str(tmp_path_factory.mktemp("submit-drop"))
    bundle = build_two_stage_bundle(os.path.join(root, "tiny"))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    c = Cluster(os.path.join(root, "agents"), bundle, {"s1": 0, "w1": 1})
    try:
        c.start("s1", arrival="client", client_bind=endpoint)
        c.wait_for(lambda: c.stats("s1") is not None, 60, "the source to start")
        yield endpoint, c
    finally:
        c.stop_all()


@pytest.mark.parametrize("rate", [[], ["--rate", "10", "--count", "1"]], ids=["one", "rate"])
def test_no_answer_to_a_message_over_twice_the_limit_names_zeromqs_drop(
        source, tmp_path, capsys, rate):
    """Rule: a run whose input's message is over twice the node config's default
    max_message_bytes (sent with --max-message-bytes above it) and so gets no answer says that
    ZeroMQ dropped the connection for the message's size, with the message size and the limit,
    and not that --timeout may be too short, one input at a time and at --rate alike; exit 2.
    The source never saw the task."""
    source, cluster = source
    # 34 MB: above twice 16 MiB and the 64 KiB of headroom the agent's socket adds to it
    images = str(tmp_path / "huge.npz")
    np.savez(images, x=np.zeros((1, 1, 8500, 1000), np.float32))
    assert cli.main(["submit", "--images", images, "--endpoint", source, "--timeout", "5"]
                    + rate + ["--max-message-bytes", str(64 << 20)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-agent submit: error: no answer from %s within 5 s: its message "
                          "of " % source), err
    assert ("is over twice the source's max_message_bytes %d (the node config's default), and "
            "ZeroMQ drops a connection whose message is over about twice the source's "
            "max_message_bytes" % DEFAULT_MAX_MESSAGE_BYTES) in err, err
    if rate:
        assert err.endswith("; 0 input(s) in flight not awaited, 0 not sent"), err
    assert "--timeout may be too short" not in err and len(err.splitlines()) == 1, err
    assert cluster.tasks("s1").get("created", 0) == 0, cluster.tasks("s1")
