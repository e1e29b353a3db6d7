"""``frames.send_frames``: one message of many frames, small ones copied, big ones zero-copy."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from agent.net.frames import ZERO_COPY_MIN_BYTES, send_frames


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    for s in (a, b):
        s.setsockopt(zmq.LINGER, 0)
    b.bind("inproc://frames")
    a.connect("inproc://frames")
    yield a, b
    a.close()
    b.close()
    ctx.term()


def test_every_frame_arrives_whole_in_one_message(pair):
    """Rule: headers (bytes), small and big tensor views and zmq frames arrive as the one
    message they were sent as, byte for byte, in order."""
    a, b = pair
    big = np.arange(ZERO_COPY_MIN_BYTES // 2, dtype=np.float32)  # 2x the zero-copy bound
    small = np.arange(16, dtype=np.int64)
    frames = [b"id", b"header", memoryview(small.view(np.uint8)), memoryview(big.view(np.uint8)),
              zmq.Frame(b"frame")]
    send_frames(a, frames)
    got = b.recv_multipart()
    assert got == [b"id", b"header", small.tobytes(), big.tobytes(), b"frame"]
    send_frames(a, [b"one"])
    assert b.recv_multipart() == [b"one"]


def test_a_message_that_cannot_go_now_raises_again_and_sends_nothing():
    """Rule: like ``send_multipart(..., NOBLOCK)``: a DEALER with no connection (IMMEDIATE)
    raises ``zmq.Again`` at once, and no part of the message is left queued."""
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.IMMEDIATE, 1)
    d.connect("tcp://127.0.0.1:9")  # nothing listens there
    try:
        with pytest.raises(zmq.Again):
            send_frames(d, [b"header", memoryview(bytes(ZERO_COPY_MIN_BYTES))])
    finally:
        d.close()
        ctx.term()
