"""A metrics endpoint stand-in for the tests of ``status``: a real TCP listener on loopback
that takes connections, counts them, and answers each with a fixed HTTP body, or never (a hung
metrics server, which a reader waits on until its timeout)."""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Optional


class StubEndpoint:
    """Takes connections on ``127.0.0.1:PORT`` (``text``; a port the kernel picks unless
    ``port`` is given) and answers each with ``body`` (None: never, the connection kept open).

    The kernel's pick is bound at once and held, so nothing can take it in between; a port
    handed out first (``free_ports``) and bound after was once found taken (EADDRINUSE)."""

    def __init__(self, body: Optional[bytes] = None, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.text = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.body = body
        self.conns: List[socket.socket] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def accepted(self) -> int:
        """The connections taken so far."""
        with self.changed:
            return len(self.conns)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed at the end of the test
                return
            with self.changed:
                self.conns.append(conn)  # kept open when silent: the reader waits for an answer
                self.changed.notify_all()
            if self.body is not None:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body)
                         + self.body)
            conn.close()
        except OSError:
            pass

    def wait_for(self, n: int, limit_s: float) -> bool:
        """True once ``n`` connections were taken (False after ``limit_s``, a generous bound)."""
        end = time.monotonic() + limit_s
        with self.changed:
            while len(self.conns) < n and time.monotonic() < end:
                self.changed.wait(1.0)
            return len(self.conns) >= n

    def close(self) -> None:
        self.sock.close()
        with self.changed:
            for c in self.conns:
                c.close()
