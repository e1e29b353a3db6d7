"""A client of a source's client endpoint: send an input, get its answer (or why there is none).

A source with ``arrival = "client"`` takes TASK messages on ``client_bind`` and answers each
with a RESULT carrying the client's own task id. With ``client_keys_dir`` set the endpoint is
a CURVE server: the client needs its own keypair (its public key in that folder) and the
source's public key, and a client whose key is not listed never completes the handshake (it
gets no answer; the source counts the refusal as ``client_refused``)::

    from agent.fleet.client import Client, ClientKeys

    keys = ClientKeys.load("keys/laptop.key_secret", "fleet/cam1.key")
    with Client("tcp://10.0.0.10:5560", keys) as c:
        answer = c.infer(x)            # x: one input, shaped like the bundle's stage-1 input
        print(answer.outcome, answer.reason, answer.cls, answer.confidence)

Every call returns an ``Answer``: ``outcome`` is "completed", or "rejected" / "lost" / "error"
with a ``reason`` (the source's, e.g. "overload", "deadline"; or "no answer within N s"), for a
refused input a ``detail`` line saying what was wrong with it (e.g. "input float64 (1, 28, 28);
stage 1 takes float32 (1, 1, 28, 28)") and for a rejected one ``retry_s``, the wait the source
advises before sending it again. ``Client.check_connection`` tells, before the first input, a
refused connection or key. An input above the source's ``max_message_bytes`` (the node config's
default unless ``max_message_bytes=`` says) is ``InputTooLarge``, not sent: the source would
refuse it, and above twice that ZeroMQ drops the connection (no answer, nothing counted by the
agent). ``AsyncClient`` is the asyncio variant (``await client.infer(x)``, many at once). No
send blocks: with ``SNDHWM`` inputs queued for a source gone or stalled, ``NotSent`` is raised.

Of the agent, only ``agent.fleet.client_wire`` (the messages: TASK frames, ``Answer``) and
``agent.protocol.wire`` (numpy, msgpack), the key-file readers of
``agent.net.security``, ``agent.fleet.clientcheck``, ``agent.net.addrfamily`` and
``agent.config.node`` (pure Python) are imported: any host will do. The socket uses IPv6 only
for an IPv6 address or a name with no IPv4 address (``agent.net.addrfamily``).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import zmq

from agent.fleet.client_wire import Answer, message_limit, no_answer, parse_answer, task_frames
from agent.protocol import wire
from agent.protocol.text import DETAIL_MAX_CHARS  # noqa: F401 (API: longest reason or detail)

# a source answers a task it gave up on (lost, reason deadline) after result_timeout_s *
# max_attempts, 60 s by default, counted from its own start of the task: wait a margin longer
DEFAULT_TIMEOUT_S = 75.0
POLL_SLICE_S = 0.2  # longest wait in one poll while an answer is awaited (see receive)


@dataclass(frozen=True)
class ClientKeys:
    """CURVE keys of a client: its own pair and the source's (server's) public key, z85."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def load(cls, secret_file: str, server_key: str) -> "ClientKeys":
        """Read the client's ``NAME.key_secret`` (mode 0600, as the agent checks its own) and
        the source's public key (a ``.key`` file or the z85 text); raises ``ValueError`` naming
        the file when one is unusable."""
        from agent.net.security import SecurityError, load_public_key, load_secret_key_file

        try:
            public, secret = load_secret_key_file(secret_file)
            server = load_public_key(server_key)
        except SecurityError as exc:
            raise ValueError(str(exc)) from None
        return cls(public, secret, server)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the source."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


_ids = itertools.count(1)


class InputTooLarge(ValueError):
    """An input whose message is above the source's ``max_message_bytes``: not sent."""


class NotSent(RuntimeError):
    """An input ZeroMQ could not queue (nothing sent): its queue to the source is full."""


class _Base:
    def __init__(self, ctx: zmq.Context, endpoint: str, keys: Optional[ClientKeys],
                 name: str, timeout_s: float, limit: Tuple[int, bool]):
        self.max_message_bytes, self._limit_given = limit  # (bytes, given by the caller)
        self.endpoint = endpoint
        self.name = name
        self.timeout_s = float(timeout_s)
        self.sent_at: Dict[str, float] = {}
        self.curve = keys is not None  # the endpoint is a CURVE server
        self.connected = False  # the last check_connection saw the handshake succeed
        from agent.net.addrfamily import wants_ipv6

        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IPV6, int(wants_ipv6(endpoint)))
        if keys is not None:
            keys.apply(self.sock)
        self.sock.connect(endpoint)

    def _next_id(self) -> str:
        return "%s-%d-%d" % (self.name, os.getpid(), next(_ids))

    def frames(self, x: np.ndarray, tid: str) -> List[Any]:
        """The TASK frames of ``x``; ``InputTooLarge`` above the source's limit (not sent)."""
        x, limit = np.asarray(x), self.max_message_bytes
        frames = task_frames(x, tid, self.name)
        size = wire.frames_nbytes(frames)
        if size > limit:
            raise InputTooLarge("input %s %s of %d bytes: its message of %d bytes is above the "
                                "source's max_message_bytes %d (%s); %s: raise max_message_bytes "
                                "in the source's node config and give the client that limit" % (
                                    x.dtype.name, tuple(x.shape), x.nbytes, size, limit,
                                    "given" if self._limit_given else "the node config's default",
                                    "above about twice that ZeroMQ drops the connection, no "
                                    "answer" if size > 2 * limit else "the source would refuse it"))
        return frames

    def _queue_full(self) -> str:
        return ("%d input(s) already wait for %s, which takes none (gone or stalled)"
                % (self.sock.getsockopt(zmq.SNDHWM), self.endpoint))


class Client(_Base):
    """A blocking client of one source (one socket; not thread-safe)."""

    def __init__(self, endpoint: str, keys: Optional[ClientKeys] = None, name: str = "client",
                 timeout_s: float = DEFAULT_TIMEOUT_S, ctx: Optional[zmq.Context] = None,
                 max_message_bytes: Optional[int] = None):
        limit = (message_limit(max_message_bytes), max_message_bytes is not None)
        self._own_ctx, self.ctx = ctx is None, ctx or zmq.Context()
        super().__init__(self.ctx, endpoint, keys, name, timeout_s, limit)
        # called between polls while an answer is awaited: raises to stop the wait (a caller
        # whose signal handler's exception pyzmq may drop raises it again from here)
        self.interrupted: Callable[[], None] = lambda: None
        # answers read while ``wait_for`` awaited another input's, by id, oldest first: served
        # by ``wait_for`` and ``receive`` before the socket (at most one per input sent)
        self.ready: Dict[str, Answer] = {}

    def check_connection(self, wait_s: float) -> str:
        """Watch the connection to the source for up to ``wait_s`` seconds, before anything is
        sent: "" once the handshake succeeded (or nothing decided within ``wait_s``: a slow or
        filtered network, left to the answer timeout), else why no input could get through
        (``address_problem``, ``handshake_problem``). A source that starts within ``wait_s``
        is found (ZeroMQ keeps reconnecting).

        The socket connects again under a monitor (a handshake done before it was watched
        would never be reported), so call this before ``send``."""
        if not 0 <= wait_s < math.inf:
            raise ValueError("wait_s must be a finite number >= 0, got %r" % (wait_s,))
        if self.sent_at:
            raise RuntimeError("check_connection reconnects: call it before sending")
        from agent.fleet.clientcheck import address_problem, handshake_problem

        mon = None
        try:
            mon = self.sock.get_monitor_socket()
            self.sock.disconnect(self.endpoint)
            self.sock.connect(self.endpoint)
            self.connected = False
            problem = address_problem(self.endpoint)
            if not problem:
                problem, self.connected = handshake_problem(mon, wait_s, self.curve)
            return problem
        finally:  # an open monitor would block the context's term() for ever
            if mon is not None:
                self.sock.disable_monitor()
                mon.close(0)

    def send(self, x: np.ndarray, tid: Optional[str] = None) -> str:
        """Send one input without waiting; returns its task id (see ``receive``).
        ``InputTooLarge`` (nothing sent) for one above the source's ``max_message_bytes``;
        ``NotSent`` when ZeroMQ's queue to the source is full; ``ValueError`` for a ``tid``
        still in flight or whose answer is not collected yet."""
        tid = tid or self._next_id()
        if tid in self.sent_at or tid in self.ready:
            raise ValueError("task id %r is in flight already: give each input its own id" % tid)
        try:
            self.sock.send_multipart(self.frames(x, tid), copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:  # blocking would hold every deadline until the source is back
            raise NotSent(self._queue_full()) from None
        self.sent_at[tid] = time.monotonic()
        return tid

    @property
    def pending(self) -> int:
        """Inputs whose answers ``receive`` is still to return: those awaited (``sent_at``)
        and those already kept by a ``wait_for`` (``ready``). Loop on this, not on
        ``sent_at`` alone, to drain every answer."""
        return len(self.sent_at) + len(self.ready)

    def receive(self, timeout_s: float) -> Optional[Answer]:
        """The next answer to one of the inputs sent (one ``wait_for`` read past first), or
        None when none came in ``timeout_s``."""
        return self.ready.pop(next(iter(self.ready))) if self.ready else self._read(timeout_s)

    def _read(self, timeout_s: float) -> Optional[Answer]:
        """The next answer on the socket, or None when none came in ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            # in slices, asking ``interrupted`` between them: pyzmq (27.x) runs a signal's
            # Python handler inside its calls but drops the exception the handler raised, so a
            # Ctrl-C landing in one was lost until the answer's whole wait had passed
            if not self.sock.poll(max(0, int(math.ceil(min(left, POLL_SLICE_S) * 1000)))):
                self.interrupted()
                if left <= POLL_SLICE_S:
                    return None
                continue
            ans = parse_answer(self.sock.recv_multipart(), self.sent_at, time.monotonic())
            if ans is not None:
                return ans

    def infer(self, x: np.ndarray, timeout_s: Optional[float] = None) -> Answer:
        """Send one input and wait for its answer ("lost" after ``timeout_s``, or not sent)."""
        tid = self._next_id()
        try:
            self.send(x, tid)
        except NotSent as exc:
            return no_answer(tid, 0.0, str(exc))
        return self.wait_for(tid, self.timeout_s if timeout_s is None else timeout_s)

    def wait_for(self, tid: str, timeout_s: float) -> Answer:
        """The answer to input ``tid`` (sent with ``send``; a "lost" answer ``timeout_s`` after
        it was sent, and a later one is read past). Answers to other inputs that come first
        are kept for their own ``wait_for`` or ``receive``; ``ValueError`` for an id neither in
        flight nor kept (never sent, or its answer returned already)."""
        if tid in self.ready:
            return self.ready.pop(tid)
        if tid not in self.sent_at:
            raise ValueError("unknown or already answered task id %r" % (tid,))
        deadline = self.sent_at[tid] + timeout_s
        while True:
            ans = self._read(max(0.0, deadline - time.monotonic()))
            if ans is None:
                self.sent_at.pop(tid, None)
                return no_answer(tid, timeout_s)
            if ans.id == tid:
                return ans
            self.ready[ans.id] = ans

    def close(self) -> None:
        """Close the socket (and the context this client made)."""
        self.sock.close(0)
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio client: ``await infer(x)``; many calls may be in flight at once."""

    def __init__(self, endpoint: str, keys: Optional[ClientKeys] = None, name: str = "client",
                 timeout_s: float = DEFAULT_TIMEOUT_S, ctx: Any = None,
                 max_message_bytes: Optional[int] = None):
        import asyncio
        import zmq.asyncio

        limit = (message_limit(max_message_bytes), max_message_bytes is not None)
        self._own_ctx, self.ctx = ctx is None, ctx or zmq.asyncio.Context()
        super().__init__(self.ctx, endpoint, keys, name, timeout_s, limit)
        self._waiters: Dict[str, Any] = {}
        self._reader: Optional[Any] = None
        self._asyncio = asyncio

    async def _read(self) -> None:
        while self._waiters:
            frames = await self.sock.recv_multipart()
            ans = parse_answer(frames, self.sent_at, time.monotonic())
            fut = self._waiters.pop(ans.id, None) if ans is not None else None
            if fut is not None and not fut.done():
                fut.set_result(ans)

    async def infer(self, x: np.ndarray, timeout_s: Optional[float] = None) -> Answer:
        """Send one input and wait for its answer (a "lost" answer after ``timeout_s``);
        ``InputTooLarge`` (nothing sent) for one above the source's ``max_message_bytes``."""
        asyncio = self._asyncio
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        tid = self._next_id()
        frames = self.frames(x, tid)
        try:  # done at once, no other task runs before its waiter is in place
            await self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            return no_answer(tid, 0.0, self._queue_full())
        fut = asyncio.get_event_loop().create_future()
        self._waiters[tid] = fut
        self.sent_at[tid] = time.monotonic()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except asyncio.TimeoutError:
            self._waiters.pop(tid, None)
            self.sent_at.pop(tid, None)
            return no_answer(tid, timeout_s)

    def close(self) -> None:
        """Stop reading and close the socket (and the context this client made)."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self.sock.close(0)
        if self._own_ctx:
            self.ctx.term()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()
