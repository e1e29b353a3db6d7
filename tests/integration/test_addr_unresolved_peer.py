"""A peer whose configured host does not resolve is named (real agent processes on loopback).

Source ``s1`` lists ``w1`` at 127.0.0.1 (not started: nothing is wrong with its address) and
``w1b`` at a ``.invalid`` host, which never resolves. ZeroMQ only retries such an address, so
before, the source said no more than "no live route to stage 1"; now it names the config fields
and the host once the start-up grace is over (``agent.node.reach``)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

WARNING = "neighbour w1b not heard"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_a_source_names_the_peer_fields_whose_host_does_not_resolve(bundle, tmp_path):
    """Rule: after the grace, one WARNING names peers[1].control_address and
    peers[1].data_address and says the host does not resolve; the unstarted peer at a
    resolving address is not named, and the line comes once."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w1b": 1}, policy="cf")
    peers = c.config("s1").peers
    assert [p.id for p in peers] == ["w1", "w1b"]
    bad = [dataclasses.replace(p, control_address="tcp://no-such-w1b.invalid:5551",
                               data_address="tcp://no-such-w1b.invalid:5552")
           if p.id == "w1b" else p for p in peers]
    try:
        # a short start-up grace: the lookup (and its warning) comes 1 s after the first
        # heartbeat instead of 5 s; w1b never resolves however long the grace
        c.start("s1", peers=tuple(bad), start_grace_s=1.0)
        c.wait_for(lambda: WARNING in c.tail("s1", 400), 90, "s1's warning about w1b")
        time.sleep(1.0)  # a status interval or two: a second line would show by now
        log = c.tail("s1", 400)
        lines = [line for line in log.splitlines() if WARNING in line]
        assert len(lines) == 1, lines
        assert ("peers[1].control_address tcp://no-such-w1b.invalid:5551 and "
                "peers[1].data_address tcp://no-such-w1b.invalid:5552: the host "
                "no-such-w1b.invalid does not resolve") in lines[0]
        assert "neighbour w1 not heard" not in log
    finally:
        c.stop_all()
