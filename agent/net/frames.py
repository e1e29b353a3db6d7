"""Sending one message's frames from the agent's sockets: small frames copied, big ones not;
whether a socket can send now; and receiving one message, its frames bounded."""

from __future__ import annotations

from typing import Any, List, Sequence

import zmq

# plain ints: zmq's are enum flags, and ``|`` on those runs Python code per frame
_NOBLOCK, _NOBLOCK_MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
# a frame below this many bytes is copied into its message (headers, identities, small tensors);
# a bigger buffer goes zero-copy, which costs a tracked frame object (the same bound as pyzmq's
# copy_threshold)
ZERO_COPY_MIN_BYTES = 65536
# frames of one received message kept: the agent's have at most a routing id or topic, a header
# and ``wire.MAX_TENSORS`` tensors, so a longer one is junk whatever it holds. An empty frame
# costs 2 bytes on the wire and ~250 in Python: one 2 MB message of a million empty frames held
# the loop 2 s and grew the agent by 250 MB; the frames past this many are read and let go.
MAX_FRAMES = 16


def send_frames(sock: Any, frames: Sequence[Any]) -> None:
    """Send ``frames`` as one message without blocking (``zmq.Again`` when it cannot go now).

    What ``send_multipart(frames, NOBLOCK, copy=False)`` does, per frame with plain-int flags
    and small frames copied (pyzmq's enum flags run Python per frame, and a zero-copy send of a
    small buffer still builds the tracked frame first): measured 30 -> 22 us for a 256 KiB
    tensor message, 10 -> 7 us for a small one."""
    last = len(frames) - 1
    for i, f in enumerate(frames):
        small = type(f) is bytes or (type(f) is memoryview and f.nbytes < ZERO_COPY_MIN_BYTES)
        sock.send(f, _NOBLOCK_MORE if i < last else _NOBLOCK, copy=small)


def can_send(sock: Any) -> bool:
    """True when ``sock`` (a DEALER with IMMEDIATE, as the transport's are) has a connection
    that takes a message now: without one, a send would be refused at once (None: no socket)."""
    return sock is not None and bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT)


def recv_message(sock: Any) -> List[Any]:
    """The next whole message on ``sock`` as zero-copy frames, at most ``MAX_FRAMES`` of them
    (the rest of a longer one read and dropped: its frame count tells the decoder it is junk);
    ``zmq.Again`` when none is queued. ZeroMQ delivers a message's frames together."""
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame]
    # Frame.more costs less than a RCVMORE query per frame
    while frame.more and len(frames) < MAX_FRAMES:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    if frame.more:
        while sock.getsockopt(_RCVMORE):  # read as bytes: no frame object built for each
            sock.recv(_NOBLOCK)
    return frames
