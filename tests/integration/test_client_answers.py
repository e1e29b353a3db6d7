"""What a source answers a local client, beyond a classification: a TASK whose id is a number is
answered ``error`` / ``bad_input`` under that number as text; a client's new input during the
drain after SIGTERM is answered ``rejected`` / ``shutdown`` at once (counted and recorded as
every rejection), while the inputs admitted before are drained as before; a rejected answer
carries ``retry_s``, the wait the source advises (``overload``: until the first held-off
stage-1 successor may take work again, at least one stage-1 service time; ``no_route`` and
``admission``: a heartbeat interval; ``shutdown``: none); an answer a gone client cannot get
is counted ``client_answer_undeliverable`` and logged once a minute at most.

The first test runs a real source process alone (its one worker never started), real ZeroMQ
sockets from the client's side; the others run a source's real parts in this process
(``tests.unit.source_parts``)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np
import pytest
import zmq

from agent.fleet.client import Client
from agent.policies.api import AgentPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.source_parts import source_parts

from .agent_cluster import Cluster, build_two_stage_bundle

BEAT_S = 0.2  # the Cluster's heartbeat_interval_s


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("bundle")))


def _raw_answer(sock, timeout_s=30.0):
    """The next RESULT a raw DEALER gets, decoded."""
    assert sock.poll(int(timeout_s * 1000)), "no answer came"
    msg = wire.decode(sock.recv_multipart())
    assert msg.kind == Kind.RESULT
    return msg.fields


def test_a_source_answers_an_int_id_a_full_queue_and_an_input_during_its_drain(bundle, tmp_path):
    """Rule, on a real source with no worker up and max_queue_tasks 1: the first input is
    admitted (it waits: the start-up grace before a route verdict is made 30 s long); the
    second is rejected no_route, not overload (no stage-1 worker has been heard: nothing takes
    tasks yet), with retry_s = the heartbeat interval; a raw TASK with id 42 is answered error /
    bad_input under id "42", its detail saying the id must be a string; after SIGTERM a new
    input is answered rejected / shutdown at once, with no retry_s, and recorded so, while the
    first input is drained and answered lost / shutdown when the drain ends."""
    sock_path = os.path.join(str(tmp_path), "s1.client.sock")
    endpoint = "ipc://" + sock_path
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1})
    x = np.load(os.path.join(os.path.dirname(bundle), "replay.npz"))["x"][:1]
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        c.start("s1", arrival="client", client_bind=endpoint, max_queue_tasks=1,
                result_timeout_s=120.0, drain_timeout_s=10.0, neighbour_timeout_rounds=150)
        c.wait_for(lambda: os.path.exists(sock_path), 60, "the client socket")
        with Client(endpoint, name="cam", ctx=ctx, timeout_s=60) as client:
            assert client.check_connection(30) == ""
            first = client.send(x)
            full = client.wait_for(client.send(x), 60)
            assert (full.outcome, full.reason, full.retry_s) == ("rejected", "no_route", BEAT_S)
            raw.connect(endpoint)
            fields = {"id": 42, "source": "cam", "stage": 1, "attempt": 0, "created": 0.0,
                      "hops": 0, "resends": 0}
            raw.send_multipart(wire.encode(Kind.TASK, "cam", fields, [x]))
            ans = _raw_answer(raw)
            assert (ans["id"], ans["outcome"], ans["reason"]) == ("42", "error", "bad_input")
            assert "id must be a string, not int" in ans["detail"], ans
            c.procs["s1"].terminate()
            c.wait_for(lambda: any("stopping:" in line for line in c.procs["s1"].log_lines(50)),
                       30, "the source to begin its drain")
            late = client.wait_for(client.send(x), 30)
            assert (late.outcome, late.reason, late.retry_s) == ("rejected", "shutdown", None)
            drained = client.wait_for(first, 30)
            assert (drained.outcome, drained.reason) == ("lost", "shutdown"), drained
        c.wait_for(lambda: c.procs["s1"].poll() is not None, 30, "the source to exit")
        assert c.procs["s1"].returncode == 0
    finally:
        c.stop_all()
        raw.close(0)
        ctx.term()
    recs = [(r["status"], r["reason"]) for r in c.records("s1")]
    assert sorted(recs) == [("lost", "shutdown"), ("rejected", "no_route"),
                            ("rejected", "shutdown")], recs
    assert c.stats("s1")["rejected_by_reason"] == {"no_route": 1, "shutdown": 1}


@pytest.fixture
def parts(tmp_path):
    p = source_parts(tmp_path, AgentPolicy({}, {}))
    p.view.alive.add("w1")
    sent = []  # (client id, answer fields) in the order answered
    p.out.answer_client = lambda identity, fields: sent.append((fields["id"], fields))
    p.sent = sent
    yield p
    p.close()


def _push(p, tid):
    """A client's valid input under ``tid``, as the loop hands it over, and the pass's answers
    sent (no Poisson arrival: these parts' config has one)."""
    x = p.side.replay.x[:1]
    frames = wire.encode(Kind.TASK, "cam", {"id": tid, "source": "cam", "stage": 1,
                                            "attempt": 0, "created": 0.0, "hops": 0,
                                            "resends": 0}, [x])
    p.side.on_client(b"c1", wire.decode(frames))
    p.side.send_answers()


def test_overload_advises_the_first_hold_end_or_one_stage_1_service_time(parts):
    """Rule: rejected for overload while every stage-1 successor is held off, retry_s is the
    time until the first hold ends (at most 0.4 s, at least w1's 0.05 s service time; how
    much of the hold is left depends on how long this step took); rejected for
    overload with none held off but max_queue_tasks held, it is the stage-1 service time."""
    p = parts
    p.view.peer_state["w1"] = {"service_time_s": 0.05}
    p.view.unavailable["w1"] = time.monotonic() + 0.4
    _push(p, "held-off")
    (tid, ans), = p.sent
    assert (tid, ans["outcome"], ans["reason"]) == ("held-off", "rejected", "overload")
    assert 0.05 <= ans["retry_s"] <= 0.4, ans
    del p.view.unavailable["w1"]
    p.side.cfg = dataclasses.replace(p.side.cfg, max_queue_tasks=1)
    _push(p, "admitted")
    _push(p, "full")
    assert [t for t, _ in p.sent] == ["held-off", "full"]  # "admitted" is in flight
    assert (p.sent[1][1]["reason"], p.sent[1][1]["retry_s"]) == ("overload", 0.05)


def test_no_route_and_admission_advise_a_heartbeat_interval(parts):
    """Rule: rejected for no_route, or by the policy's admission, retry_s is the source's
    heartbeat_interval_s (the fleet's state is heard again by then)."""
    p = parts
    p.view.no_route = 1
    _push(p, "nr")
    p.view.no_route = 0
    p.side.policy.admit = lambda view, now: False
    _push(p, "adm")
    got = {t: (a["reason"], a["retry_s"]) for t, a in p.sent}
    beat = p.cfg.heartbeat_interval_s
    assert got == {"nr": ("no_route", beat), "adm": ("admission", beat)}


def test_a_stopping_source_rejects_a_new_input_as_shutdown_and_keeps_draining(parts):
    """Rule: once the loop stops the source's arrivals, a client's new input is answered
    rejected / shutdown at once (no retry_s), counted in rejected_by_reason and recorded as
    rejected with reason shutdown, while the input admitted before stays in flight."""
    p = parts
    _push(p, "before")
    assert p.sent == [] and len(p.side.book.pending) == 1
    p.side.stop_arrivals()
    _push(p, "after")
    (tid, ans), = p.sent
    assert (tid, ans["outcome"], ans["reason"]) == ("after", "rejected", "shutdown")
    assert "retry_s" not in ans
    assert p.side.in_flight() and p.side.stats()["rejected_by_reason"] == {"shutdown": 1}
    p.side.flush()
    with open(p.records) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    assert [(r["status"], r["reason"]) for r in recs] == [("rejected", "shutdown")]


def test_an_answer_a_gone_client_cannot_get_is_counted_and_logged_once_a_minute(
        tmp_path, caplog):
    """Rule: when the client socket cannot deliver an answer (its client's connection is
    gone: a ROUTER that refuses unknown routing ids), the outbox counts
    client_answer_undeliverable for each and logs one WARNING naming the task, not one per
    answer."""
    p = source_parts(tmp_path, AgentPolicy({}, {}))
    sock = p.ctx.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.bind("ipc://%s/c.sock" % tmp_path)
        p.transport.client = sock
        caplog.set_level(logging.WARNING, logger="agent.node.loop")
        for i in range(3):
            p.out.answer_client(b"gone", wire.answer_fields("cam-%d" % i, "s1", "rejected",
                                                            "overload", 0.0, retry_s=0.1))
        assert p.out.counters["client_answer_undeliverable"] == 3
        lines = [r.getMessage() for r in caplog.records
                 if "could not be delivered" in r.getMessage()]
        assert lines == ["an answer to a client (its task 'cam-0') could not be delivered: its "
                         "connection is gone, or it reads no answers"], lines
    finally:
        sock.close(0)
        p.transport.client = None
        p.close()


def test_a_full_queue_with_no_stage_1_worker_heard_is_no_route_not_overload(parts):
    """Rule: with max_queue_tasks held and no stage-1 worker heard (a source started before
    its workers, or every one gone within the start-up grace), a new input is rejected
    no_route, not overload: nothing takes tasks yet, the fleet is not overloaded; once a
    stage-1 worker is alive, a full queue is overload again."""
    p = parts
    p.view.alive.discard("w1")
    p.side.cfg = dataclasses.replace(p.side.cfg, max_queue_tasks=1)
    _push(p, "waits")
    _push(p, "none-heard")
    p.view.alive.add("w1")
    _push(p, "full")
    assert [(t, a["reason"]) for t, a in p.sent] == [("none-heard", "no_route"),
                                                     ("full", "overload")]
