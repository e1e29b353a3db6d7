"""``Client.wait_for`` and ``receive`` against a real ROUTER socket the test drives as a source:
answers that come for other inputs while one is awaited are kept for their own call, never
dropped; an id neither in flight nor kept is a ``ValueError``; a late answer to an input whose
wait ended is read past; a rejected answer's ``retry_s`` reaches ``Answer.retry_s``; and the
asyncio client hands each of several inputs in flight its own answer, in whatever order they
come."""

from __future__ import annotations

import asyncio
import threading

import msgpack
import numpy as np
import pytest
import zmq

from agent.fleet.client import AsyncClient, Client
from agent.protocol import wire
from agent.protocol.wire import Kind

X = np.zeros((1, 1, 28, 28), np.float32)


@pytest.fixture
def router(tmp_path):
    """(endpoint, ROUTER socket, context): the stand-in source; freed after the test."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = "ipc://%s/client.sock" % tmp_path
    sock.bind(endpoint)
    yield endpoint, sock, ctx
    sock.close(0)
    ctx.term()


def _take(sock, n):
    """The (routing id, task id) of the next ``n`` TASKs the ROUTER gets, in arrival order."""
    got = []
    for _ in range(n):
        assert sock.poll(10000), "no TASK came"
        ident, *frames = sock.recv_multipart()
        got.append((ident, wire.decode(frames).fields["id"]))
    return got


def _answer(sock, ident, tid, cls=0, **extra):
    """Send the RESULT of ``tid``: completed with class ``cls``, or the ``extra`` fields."""
    if extra:
        fields = wire.answer_fields(tid, "s1", extra.pop("outcome"), extra.pop("reason"), 0.0,
                                    **extra)
    else:
        fields = {"id": tid, "attempt": 0, "source": "s1", "exit_stage": 1, "cls": cls,
                  "confidence": 0.9, "worker": "w1", "hops": 1, "resends": 0, "created": 0.0,
                  "outcome": "completed", "reason": ""}
    sock.send_multipart([ident] + wire.encode(Kind.RESULT, "s1", fields))


def test_answers_to_other_inputs_read_while_one_is_awaited_are_kept_for_their_own_wait(router):
    """Rule: wait_for(last) of 10 inputs whose answers come in the order sent returns the last
    one's answer, and each of the 9 others is then returned by its own wait_for, at once, with
    its own class; nothing is lost and nothing is left kept."""
    endpoint, sock, ctx = router
    with Client(endpoint, name="cam", ctx=ctx, timeout_s=10) as c:
        ids = [c.send(X) for _ in range(10)]
        tasks = _take(sock, 10)
        assert [t for _, t in tasks] == ids
        for i, (ident, tid) in enumerate(tasks):
            _answer(sock, ident, tid, cls=i)
        last = c.wait_for(ids[-1], 10)
        assert (last.id, last.outcome, last.cls) == (ids[-1], "completed", 9)
        for i, tid in enumerate(ids[:-1]):
            ans = c.wait_for(tid, 0.0)  # kept: no wait at all
            assert (ans.id, ans.outcome, ans.cls) == (tid, "completed", i)
        assert c.ready == {} and c.sent_at == {}


def test_infer_while_a_stream_is_in_flight_loses_none_of_the_stream_answers(router):
    """Rule: one infer() while 3 streamed inputs are in flight, their answers coming before
    its own, leaves those 3 answers for receive(), oldest first, then receive() waits."""
    endpoint, sock, ctx = router
    with Client(endpoint, name="cam", ctx=ctx, timeout_s=10) as c:
        stream = [c.send(X) for _ in range(3)]
        tasks = _take(sock, 3)
        for ident, tid in tasks:
            _answer(sock, ident, tid)

        infer_ids = []

        def answer_the_infer():  # the source's side while the main thread waits in infer()
            (ident, tid), = _take(sock, 1)
            _answer(sock, ident, tid, cls=7)
            infer_ids.append(tid)

        t = threading.Thread(target=answer_the_infer)
        t.start()
        mine = c.infer(X)
        t.join()
        assert (mine.id, mine.cls) == (infer_ids[0], 7)
        assert [c.receive(0.0).id for _ in stream] == stream
        assert c.receive(0.05) is None


def test_an_id_neither_in_flight_nor_kept_is_a_value_error(router):
    """Rule: wait_for of an id never sent, or of one whose answer was already returned, raises
    ValueError("unknown or already answered task id ..."), not a bare KeyError; a send under
    an id still in flight is refused the same way."""
    endpoint, sock, ctx = router
    with Client(endpoint, name="cam", ctx=ctx, timeout_s=10) as c:
        with pytest.raises(ValueError, match="unknown or already answered task id 'nope'"):
            c.wait_for("nope", 1.0)
        tid = c.send(X)
        with pytest.raises(ValueError, match="is in flight already"):
            c.send(X, tid)
        (ident, _), = _take(sock, 1)
        _answer(sock, ident, tid)
        assert c.wait_for(tid, 10).ok
        with pytest.raises(ValueError, match="unknown or already answered task id"):
            c.wait_for(tid, 1.0)


def test_a_late_answer_after_the_wait_ended_is_read_past(router):
    """Rule: an input whose wait_for ended without an answer is "lost" (no answer within N s);
    its answer coming later is neither returned by receive() nor kept."""
    endpoint, sock, ctx = router
    with Client(endpoint, name="cam", ctx=ctx, timeout_s=10) as c:
        tid = c.send(X)
        (ident, _), = _take(sock, 1)
        ans = c.wait_for(tid, 0.2)
        assert (ans.outcome, ans.reason) == ("lost", "no answer within 0.2 s")
        _answer(sock, ident, tid)
        assert c.receive(0.3) is None and c.ready == {}


def test_a_rejected_answer_carries_its_retry_s_and_others_none(router):
    """Rule: a rejected answer's retry_s is Answer.retry_s (a float); an answer without one, or
    with one that is not a finite number >= 0, has retry_s None."""
    endpoint, sock, ctx = router
    with Client(endpoint, name="cam", ctx=ctx, timeout_s=10) as c:
        ids = [c.send(X) for _ in range(4)]
        (i0, t0), (i1, t1), (i2, t2), (i3, t3) = _take(sock, 4)
        _answer(sock, i0, t0, outcome="rejected", reason="overload", retry_s=0.25)
        _answer(sock, i1, t1, outcome="rejected", reason="shutdown")
        _answer(sock, i2, t2)
        bad = wire.answer_fields(t3, "s1", "rejected", "no_route", 0.0)
        header = msgpack.unpackb(wire.encode(Kind.RESULT, "s1", bad)[0], raw=False)
        header["retry_s"] = "soon"  # a source of another make: not a number, so no hint
        sock.send_multipart([i3, msgpack.packb(header, use_bin_type=True)])
        got = {tid: c.wait_for(tid, 10) for tid in ids}
    assert (got[t0].outcome, got[t0].reason, got[t0].retry_s) == ("rejected", "overload", 0.25)
    assert (got[t1].reason, got[t1].retry_s) == ("shutdown", None)
    assert got[t2].ok and got[t2].retry_s is None
    assert (got[t3].reason, got[t3].retry_s) == ("no_route", None)


def test_the_async_client_gives_each_input_in_flight_its_own_answer(router):
    """Rule: three AsyncClient.infer calls in flight at once, answered in the reverse order,
    each return their own answer (the asyncio client keeps none for another)."""
    endpoint, sock, _ = router

    async def run():
        c = AsyncClient(endpoint, name="cam", timeout_s=10)
        try:
            calls = [asyncio.ensure_future(c.infer(X)) for _ in range(3)]
            loop = asyncio.get_event_loop()
            tasks = await loop.run_in_executor(None, _take, sock, 3)
            for i, (ident, tid) in reversed(list(enumerate(tasks))):
                _answer(sock, ident, tid, cls=i)
            answers = await asyncio.gather(*calls)
        finally:
            c.close()
        return tasks, answers

    tasks, answers = asyncio.run(run())
    by_id = {a.id: a for a in answers}
    assert sorted(by_id) == sorted(t for _, t in tasks)
    for i, (_, tid) in enumerate(tasks):
        assert by_id[tid].ok and by_id[tid].cls == i


def test_pending_counts_answers_awaited_and_answers_kept_until_received(router):
    """Rule: ``pending`` is what ``receive`` still has to return: 3 inputs sent are 3 pending;
    after wait_for(last), whose read kept the 2 others' answers, still 2 (though ``sent_at``
    is empty), so a loop on ``pending`` drains both, and then none is left."""
    endpoint, sock, ctx = router
    with Client(endpoint, name="cam", ctx=ctx, timeout_s=10) as c:
        ids = [c.send(X) for _ in range(3)]
        assert c.pending == 3
        for ident, tid in _take(sock, 3):
            _answer(sock, ident, tid)
        c.wait_for(ids[-1], 10)
        assert (c.pending, len(c.sent_at)) == (2, 0)
        got = []
        while c.pending:
            got.append(c.receive(10).id)
        assert sorted(got) == sorted(ids[:2]) and c.pending == 0
