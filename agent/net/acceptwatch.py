"""A source's client socket near the open-file limit: told when it can accept no more, and an
ipc:// path held aside before libzmq runs out of descriptors.

Every client connection takes a descriptor. At the open-file limit libzmq's accept fails with
EMFILE, and what follows depends on the endpoint (libzmq 4.3.5, measured):

- tcp://: the connection waits in the kernel's backlog and libzmq tries the accept again at
  once, for ever: its I/O thread spins on most of a core. libzmq tells each failure only to a
  monitor (``EVENT_ACCEPT_FAILED``), about 250000 a second, and a monitor's events are sent
  blocking: once 1000 wait unread, libzmq's I/O thread (every socket's) stops until they are
  read, and closing the socket then never returns. So that event is not watched: the watch
  counts the process's descriptors (/proc/self/fd) every ``CHECK_S`` instead, and while all
  are in use logs ``cannot accept client connections`` at once and then at most once per
  ``LOG_INTERVAL_S`` (how long since the last line), and one INFO line once they are free.
- ipc://: libzmq's ipc listener asserts instead (``Too many open files
  (src/ipc_listener.cpp:297)``, SIGABRT): the agent dies, and under systemd a client that
  connects again crash-loops the unit. So the descriptors are also counted as clients connect
  (a monitor's ``EVENT_ACCEPTED``, one per connection), and once no more than ``spare_fds``
  are left the socket's path is moved aside (``.NAME.full`` in its folder): the listener and
  every connection it accepted stay as they are, and a new client's connect finds no file
  (libzmq tries it again later). With descriptors free again the path is linked back.
  ``unbind`` would not do: it closes every connection the listener accepted (measured: an
  answer to a connected client then fails with EHOSTUNREACH). The socket's backlog is
  ``CLIENT_BACKLOG``, so few connections queued before the path went aside are accepted
  after it; a burst faster than the loop can count can still get past (measured: 3 processes
  of 1100 clients each under a limit of 1024 reached 918 descriptors, the path aside at
  ~900), which the start-up warning says (``agent.ops.openfiles.warn_client_endpoint``). An
  abstract name (``ipc://@NAME``) and ``ipc://*`` have no path to move: only the warning.

``bind`` is the transport's bind of every socket (never over a live ipc:// path).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any, Callable, Optional

import zmq

try:
    import resource
except ImportError:  # not Unix: no limit to read
    resource = None  # type: ignore

from agent.net import ipcbind
from agent.net.handshakes import monitor
from agent.ops.openfiles import warn_client_endpoint

log = logging.getLogger("agent.net.transport")  # one of the transport's parts

ACCEPT_EVENTS = int(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)  # one each per connection
LOG_INTERVAL_S = 60.0  # at most one line per this many seconds while no descriptor is free
CHECK_S = 1.0  # descriptors counted this often (and at each accept near the limit)
CLIENT_BACKLOG = 16  # an ipc:// client socket's queue of connections not yet accepted
MIN_SPARE_FDS = 2 * CLIENT_BACKLOG  # the queue, and the agent's own files meanwhile


def spare_fds(limit: int) -> int:
    """Descriptors kept free under the soft limit ``limit``: an ipc:// path goes aside when
    no more are left."""
    return max(MIN_SPARE_FDS, limit // 8)


def fds_in_use(limit: int) -> int:
    """Descriptors this process holds now; ``limit`` when even the count finds none free (the
    listing itself needs one), -1 when there is no /proc to count them in."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
    except OSError as exc:
        return limit if exc.errno in (errno.EMFILE, errno.ENFILE) else -1


def bind(sock: Any, endpoint: str, plane: str) -> str:
    """Bind ``sock`` (``ipcbind``: never over a live ipc:// socket); the endpoint it took
    (what ``*`` or port 0 took), logged when it is not ``endpoint``."""
    ipcbind.bind(sock, endpoint)
    bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode("utf-8", "replace")
    if bound != endpoint:
        log.info("%s socket %s bound at %s", plane, endpoint, bound)
    return bound


class AcceptWatch:
    """The watch over one client socket (module docstring); ``endpoint`` "" watches nothing.
    The transport ``arm``s it before the bind, hands it the monitor's messages (``event``),
    calls ``tick`` on every poll and ``close`` at its close."""

    def __init__(self, endpoint: str, clock: Callable[[], float] = time.monotonic):
        self.endpoint = endpoint
        path = ipcbind.ipc_path(endpoint)
        self.path = path  # the file moved aside near the limit ("": none)
        self.aside = ipcbind.aside_path(path)
        self.clock = clock
        self.limit = 0  # the soft open-file limit (0: unlimited or unknown, nothing counted)
        self.spare = MIN_SPARE_FDS
        self.mon: Optional[zmq.Socket] = None
        self.connections = 0  # client connections open now
        self.full_checks = 0  # counts that found no descriptor free, so far
        self.held_aside = 0  # times the path went aside so far
        self.hidden = False  # the path is aside now
        self._sock: Optional[zmq.Socket] = None
        self._in_use = 0  # descriptors at the last count, and connections accepted since
        self._next_check = float("-inf")
        self._full_at: Optional[float] = None  # when the last line about a full table was
        self._full_unlogged = 0  # counts that found it full since that line
        self._full_told = False  # that line is not yet answered by "free again"
        self._aside_at: Optional[float] = None  # ... about the path going aside
        self._aside_unlogged, self._aside_told = 0, False

    def arm(self, sock: zmq.Socket, poller: zmq.Poller) -> None:
        """Watch the client socket ``sock`` (before its bind: a client may connect at once);
        an ipc:// one gets the short backlog, and a low limit its start-up warning."""
        if not self.endpoint:
            return
        self._sock = sock
        self.mon = monitor(sock, ACCEPT_EVENTS)
        poller.register(self.mon, zmq.POLLIN)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else -1
        self.limit = soft if soft > 0 else 0  # RLIM_INFINITY is -1
        self.spare = spare_fds(self.limit)
        if self.path and os.path.lexists(self.aside) and not ipcbind.served(self.aside):
            try:  # left by an agent killed while its path was aside
                os.unlink(self.aside)
            except OSError:
                pass
        if self.endpoint.startswith("ipc://"):
            sock.setsockopt(zmq.BACKLOG, CLIENT_BACKLOG)
            warn_client_endpoint(self.endpoint, self.limit, bool(self.path), self.spare)

    def event(self, frames: Any) -> None:
        """One message of the monitor (as received)."""
        if self._count(frames) == zmq.EVENT_ACCEPTED and \
                self._in_use + 4 * self.spare >= self.limit:
            self.check()  # near the limit: counted at each accept, not at the next tick

    def _count(self, frames: Any) -> int:
        """The event of a monitor message, counted; 0 when unreadable."""
        try:
            head = frames[0]
            event = int.from_bytes(getattr(head, "bytes", head)[:2], "little")
        except (TypeError, IndexError):
            return 0
        if event == zmq.EVENT_ACCEPTED:
            self.connections += 1
            self._in_use += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self.connections = max(0, self.connections - 1)
            self._in_use -= 1
        return event

    def _drain(self) -> None:
        """Count the monitor's messages waiting (libzmq's I/O thread blocks on a full one)."""
        try:
            while self.mon is not None and self.mon.poll(0):
                self._count(self.mon.recv_multipart(zmq.NOBLOCK))
        except zmq.ZMQError:
            pass

    def tick(self) -> None:
        """Called on every poll: the descriptors counted (``check``) once ``CHECK_S`` is up."""
        if self.mon is None:
            return
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + CHECK_S
            self.check()

    def check(self) -> None:
        """Count the descriptors: tell a full table; move the path aside when no more than
        ``spare`` are left, back when half as many again are free."""
        if not self.limit:
            return
        n = fds_in_use(self.limit)
        if n < 0:  # no /proc: nothing to count with
            self.limit = 0
            return
        self._in_use = n
        left = self.limit - n
        if left <= 1:
            self._told_full(n)
        else:
            self._told_free(n)
        if self.path and not self.hidden and left <= self.spare:
            self._move(n)
        elif self.path and self.hidden and left > self.spare + self.spare // 2:
            self._restore(n)

    def _told_full(self, n: int) -> None:
        self.full_checks += 1
        now = self.clock()
        if self._full_at is not None and now - self._full_at < LOG_INTERVAL_S:
            self._full_unlogged += 1
            return
        self._drain()  # the connections the loop has not read of yet: counted in the line
        since = ("; still so at %d counts since the last line, one every %.0f s"
                 % (self._full_unlogged, CHECK_S) if self._full_unlogged else "")
        log.warning("cannot accept client connections on %s: Too many open files (limit %d, "
                    "%d in use, %d client connections open%s): raise LimitNOFILE= in the unit "
                    "(ulimit -n where started by hand)", self.endpoint, self.limit, n,
                    self.connections, since)
        self._full_at, self._full_unlogged, self._full_told = now, 0, True

    def _told_free(self, n: int) -> None:
        if self._full_told:
            log.info("client connections on %s accepted again: %d of the open-file limit %d "
                     "in use", self.endpoint, n, self.limit)
            self._full_told = False

    def _move(self, n: int) -> None:
        try:
            os.rename(self.path, self.aside)
        except OSError as exc:  # gone, or its folder not ours to write: nothing to hold aside
            log.warning("cannot hold the client endpoint %s aside near the open-file limit "
                        "(%d of %d in use): %s", self.endpoint, n, self.limit,
                        exc.strerror or exc)
            self.path = ""
            return
        self.hidden, self.held_aside = True, self.held_aside + 1
        now = self.clock()
        if self._aside_at is not None and now - self._aside_at < LOG_INTERVAL_S:
            self._aside_unlogged += 1
            return
        more = (" (held aside %d more times since the last line)" % self._aside_unlogged
                if self._aside_unlogged else "")
        log.warning("client endpoint %s held aside from new clients: %d of the open-file limit "
                    "%d in use, and libzmq aborts the agent when it accepts an ipc:// "
                    "connection past the limit; connected clients are still served (%d now)%s: "
                    "raise LimitNOFILE= in the unit (ulimit -n where started by hand)",
                    self.endpoint, n, self.limit, self.connections, more)
        self._aside_at, self._aside_unlogged, self._aside_told = now, 0, True

    def _restore(self, n: int) -> None:
        try:
            os.link(self.aside, self.path)  # never over a file put there meanwhile
        except OSError as exc:
            log.warning("client endpoint %s stays aside as %s: %s", self.endpoint, self.aside,
                        "another file took its path" if exc.errno == errno.EEXIST
                        else exc.strerror or exc)
            self.path, self.hidden = "", False
            return
        try:
            os.unlink(self.aside)
        except OSError:
            pass
        self.hidden = False
        if self._aside_told:  # the line that said it went aside gets its answer
            log.info("client endpoint %s open to new clients again: %d of the open-file limit "
                     "%d in use", self.endpoint, n, self.limit)
            self._aside_told = False

    def close(self) -> None:
        """Stop watching; a path aside is put back (the socket is closed next)."""
        if self.mon is None:
            return
        if self.hidden:
            self._aside_told = False  # put back as the socket closes: nothing to tell
            self._restore(fds_in_use(self.limit))
        self._drain()  # first: libzmq's I/O thread holds the monitor while it blocks on it
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.mon.close(linger=0)
        self.mon = None
