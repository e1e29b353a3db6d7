"""The start-up warning of a source's ipc:// client endpoint under a low open-file limit
(``agent.ops.openfiles.warn_client_endpoint``): libzmq aborts the agent when it accepts an
ipc:// connection past the limit, which tcp:// does not (it refuses)."""

from __future__ import annotations

import logging

import zmq

from agent.net.acceptwatch import CLIENT_BACKLOG, AcceptWatch, spare_fds
from agent.ops.openfiles import warn_client_endpoint


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "agent.ops.openfiles"]


def test_a_low_limit_warns_that_libzmq_aborts_and_how_to_raise_it(caplog):
    """Rule: below 4096 one WARNING names the limit and the endpoint, says libzmq aborts the
    agent past the limit, what holds new clients off (the path held aside, or nothing for an
    abstract name) and LimitNOFILE=65536 / ulimit -n; at 4096 or more, or unlimited, nothing."""
    with caplog.at_level(logging.WARNING, logger="agent.ops.openfiles"):
        warn_client_endpoint("ipc:///run/edge-agent/s1/client.sock", 1024, True, 128)
        warn_client_endpoint("ipc://@s1-clients", 1024, False, 128)
        warn_client_endpoint("ipc:///run/edge-agent/s1/client.sock", 4096, True, 512)
        warn_client_endpoint("ipc:///run/edge-agent/s1/client.sock", 0, True, 32)
    guarded, abstract = _lines(caplog)
    assert guarded.startswith("open-file limit 1024 for the ipc:// client endpoint "
                              "ipc:///run/edge-agent/s1/client.sock: libzmq aborts the agent ")
    assert "holds its path aside from new clients once 128 descriptors are left" in guarded
    assert "abstract name or ipc://* has no path to hold aside" in abstract
    for line in (guarded, abstract):
        assert "LimitNOFILE=65536 in the unit, ulimit -n 65536" in line


def test_the_watch_of_an_abstract_name_warns_and_moves_nothing(caplog):
    """Rule: an abstract ipc:// name has no file to move aside: the watch keeps no path and
    the socket gets the short backlog; each limit keeps at least two backlogs spare."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    watch = AcceptWatch("ipc://@edge-agent-test-abstract")
    try:
        watch.arm(sock, zmq.Poller())
        assert watch.path == "" and watch.mon is not None
        assert sock.getsockopt(zmq.BACKLOG) == CLIENT_BACKLOG
        watch.check()  # counts, moves nothing
        assert not watch.hidden and watch.held_aside == 0
    finally:
        watch.close()
        sock.close()
        ctx.term()
    assert spare_fds(64) == 2 * CLIENT_BACKLOG and spare_fds(1024) == 128
