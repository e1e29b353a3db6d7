"""The client when ZeroMQ's queue to a source is full (the source gone or stalled, ``SNDHWM``
inputs already waiting for it): no send blocks. ``Client.send`` raises ``NotSent``,
``infer`` (and ``AsyncClient.infer``) answer "lost" / "not sent" at once, and
``submit --rate`` records such inputs lost and goes on with its schedule and deadlines, over
real ZeroMQ sockets (ipc endpoints in the test's folder: no TCP port is taken)."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import zmq

from agent import cli
from agent.fleet.client import AsyncClient, Client, NotSent
from agent.fleet.client_wire import task_frames
from agent.protocol import wire

MAX_SENDS = 100000  # far above ZeroMQ's default SNDHWM (1000): the queue is full before


def _fill(send) -> int:
    """Call ``send()`` until it raises ``NotSent``; how many it queued before."""
    for queued in range(MAX_SENDS):
        try:
            send()
        except NotSent:
            return queued
    raise AssertionError("%d inputs queued for a source that is not there" % MAX_SENDS)


def test_a_full_queue_to_an_absent_source_raises_not_sent_and_infer_answers_lost(tmp_path):
    """Rule: with nothing at the endpoint, ``send`` queues up to ZeroMQ's limit, then raises
    ``NotSent`` (nothing sent, no id in flight) instead of blocking until the source is back;
    ``infer`` then answers "lost", reason "not sent", with the endpoint in its detail."""
    endpoint = "ipc://%s" % (tmp_path / "nothing")
    x = np.zeros((1, 2), np.float32)
    with Client(endpoint, timeout_s=3600) as c:
        queued = _fill(lambda: c.send(x))
        assert queued == c.sock.getsockopt(zmq.SNDHWM) == len(c.sent_at)
        a = c.infer(x)
        assert len(c.sent_at) == queued  # the refused input is not awaited
    assert (a.outcome, a.reason, a.ok) == ("lost", "not sent", False)
    assert endpoint in a.detail and "gone or stalled" in a.detail, a.detail


def test_the_async_client_answers_an_input_it_cannot_queue_lost_at_once(tmp_path):
    """Rule: ``AsyncClient.infer`` of an input ZeroMQ cannot queue returns "lost" / "not
    sent" instead of awaiting room (which would outlast its timeout), and leaves no waiter."""
    endpoint = "ipc://%s" % (tmp_path / "nothing")
    frames = task_frames(np.zeros((1, 2), np.float32), "filler", "client")

    async def run():
        client = AsyncClient(endpoint, timeout_s=3600)
        try:
            for _ in range(MAX_SENDS):  # the queue filled as the client's own inputs would
                try:
                    await client.sock.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
            else:
                raise AssertionError("%d inputs queued for no source" % MAX_SENDS)
            # a guard only: the answer is checked below, a hang would fail here
            answer = await asyncio.wait_for(client.infer(np.zeros((1, 2), np.float32)), 600)
            return answer, dict(client._waiters), dict(client.sent_at)
        finally:
            client.close()

    answer, waiters, sent_at = asyncio.new_event_loop().run_until_complete(run())
    assert (answer.outcome, answer.reason) == ("lost", "not sent") and not waiters \
        and not sent_at, (answer, waiters, sent_at)


def _answer_one_then_go(endpoint):
    """A stand-in source at ``endpoint`` that answers its first input (completed) and then
    goes away (its socket closed: the client's inputs queue up for it). Returns the thread."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 5000)  # the answer leaves before the socket closes
    sock.bind(endpoint)

    def serve():
        try:
            if sock.poll(60000):
                ident, *frames = sock.recv_multipart()
                fields = {"id": wire.decode(frames).fields["id"], "attempt": 0, "source": "cam",
                          "exit_stage": 1, "cls": 3, "confidence": 0.9, "worker": "w1",
                          "hops": 1, "resends": 0, "created": 1.0}
                sock.send_multipart([ident] + wire.encode(wire.Kind.RESULT, "cam", fields))
        finally:
            sock.close()
            ctx.term()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_a_rate_run_whose_source_goes_away_records_the_inputs_it_cannot_queue_and_ends(
        tmp_path, capsys):
    """Rule: with --rate, a source gone mid-run (one input answered) makes ZeroMQ's queue fill
    up; the inputs past it are lost at once, reason "not sent" (each in the tally and the
    records), the queued ones are lost at their --timeout, and the run ends with the summary
    and exit 1 instead of blocking in a send until the source is back."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 4), np.float32))
    endpoint = "ipc://%s" % (tmp_path / "src")
    n = 5000  # well past the queue's 1000 and what the socket took before it closed
    source = _answer_one_then_go(endpoint)
    status = []
    run = threading.Thread(target=lambda: status.append(cli.main(
        ["submit", "--images", images, "--endpoint", endpoint, "--count", str(n), "--rate",
         "5000", "--timeout", "3", "--out", str(tmp_path / "runs")])), daemon=True)
    run.start()
    run.join(600)  # a guard only: a send blocked for good would never return
    source.join(60)
    assert status == [1], status
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "%d sent: 1 completed, %d lost" % (n, n - 1), lines[-3:]
    with open(str(tmp_path / "runs" / "latest" / "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == n and len({r["id"] for r in recs}) == n
    reasons = {}
    for r in recs:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    assert reasons.get("not sent", 0) > 0 and reasons.get("no answer within 3 s", 0) > 0, reasons
    assert all("finished_mono" not in r and "gone or stalled" in r["detail"]
               for r in recs if r["reason"] == "not sent")


def test_source_or_client_without_fleet_is_one_error_line_not_ignored(tmp_path, capsys):
    """Rule: --source and --client name a source and a key of a `fleet render` folder: given
    without --fleet they would be ignored (the inputs sent to --endpoint all the same), so
    each is refused in one line naming the option, exit 2, before anything is sent."""
    images = str(tmp_path / "in.npz")
    np.savez(images, x=np.zeros((2, 1, 4), np.float32))
    endpoint = "ipc://%s" % (tmp_path / "src")
    for option in ("--source", "--client"):
        assert cli.main(["submit", "--images", images, "--endpoint", endpoint, option, "cam9",
                         "--timeout", "1"]) == 2
        err = capsys.readouterr().err
        assert "error: %s: only with --fleet DIR" % option in err, err
