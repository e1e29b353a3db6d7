"""The metrics endpoint's HTTP server, on an IPv4 or an IPv6 address.

``http.server``'s servers are IPv4 only (``address_family = AF_INET``): a ``metrics_host`` of
``::1`` failed with "Address family for hostname not supported". The family follows the rule
of the agent's ZeroMQ sockets (``agent.net.addrfamily``): IPv6 for an IPv6 address (brackets
allowed: ``[::1]``) and for a name with IPv6 addresses only; ``::`` listens on IPv6 and IPv4
alike (``IPV6_V6ONLY`` off), so IPv4 scrapes reach it too; IPv4 for everything else.

Each request runs on its own thread, so a connection that sends nothing, or half a request,
held its thread for good with prometheus_client's handler (no timeout): 2,000 such
connections took an agent from 6 threads to 60 and then left new ones refused. ``start``
serves a subclass of the handler that drops a request idle for ``REQUEST_TIMEOUT_S``, and the
server closes unanswered any connection beyond ``MAX_REQUESTS`` served at once (a trickle of
one header byte a few seconds apart would outlast any idle timeout).

``hold`` makes the server's bind without listening: ``doctor --config`` tries a node's metrics
address that way and lets it go (``agent.ops.doctor_metrics``); ``run`` serves its endpoint
from start-up on instead (``agent.ops.metrics_start``). ``serve_fault`` is the start-up fault
line of either bind.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Tuple

from agent.net.addrfamily import wants_ipv6

# Seconds a request may sit idle (nothing received, or a reply not taken) before its
# connection is dropped; a scrape sends its request at once and reads its reply at once.
REQUEST_TIMEOUT_S = 10.0
# Requests served at once, at most; Prometheus, `status` and `fleet` need a few at a time.
MAX_REQUESTS = 32


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``MAX_REQUESTS`` requests at once."""

    # listen backlog: socketserver's 5 made a burst of a dozen scrapes (a fleet's `status`
    # and a Prometheus at once) wait on the client's TCP retries, a second or more
    request_queue_size = MAX_REQUESTS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # every slot taken: closed unanswered
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (none left): the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client gone mid-request (reset, broken pipe) is no fault of the agent's: no
        # traceback on stderr for it; anything else as socketserver reports it
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)


class _Server6(_Server):
    """A threading HTTP server on an IPv6 address (``::`` takes IPv4 connections too)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        if self.server_address[0] == "::":  # dual stack, whatever the host's bindv6only says
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def bind_host(host: str) -> str:
    """``metrics_host`` as a socket binds it: without the brackets of ``[::1]``."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def url(host: str, port: int) -> str:
    """``http://HOST:PORT/metrics``, an IPv6 address in brackets."""
    host = bind_host(host)
    return "http://%s:%d/metrics" % ("[%s]" % host if ":" in host else host, port)


def make_server(host: str, port: int, handler: Any, bind: bool = True) -> ThreadingHTTPServer:
    """A threading HTTP server of ``handler`` bound on ``host:port`` (port 0: a free one), in
    the family the module docstring gives; ``OSError`` when it cannot bind. ``bind`` False:
    its socket made, neither bound nor listening (``hold`` binds it)."""
    host = bind_host(host)
    endpoint = "tcp://%s:%d" % ("[%s]" % host if ":" in host else host, int(port))
    if host not in ("", "*") and wants_ipv6(endpoint, bind=True):  # "": IPv4, as before
        return _Server6((host, int(port)), handler, bind_and_activate=bind)
    return _Server((host, int(port)), handler, bind_and_activate=bind)


def hold(host: str, port: int) -> ThreadingHTTPServer:
    """The bind ``make_server`` makes on ``host:port`` (the same family, socket options and
    address), without listening: a connection to it is refused, as to no server at all.
    ``OSError`` (or ``OverflowError``) when it cannot bind, e.g. a port another process
    listens on; ``server_close()`` lets the address go again."""
    server = make_server(host, port, BaseHTTPRequestHandler, bind=False)
    try:
        server.server_bind()
    except BaseException:
        server.server_close()
        raise
    return server


def serve_fault(host: str, port: int, exc: BaseException) -> str:
    """The start-up fault line (exit 78) of a metrics endpoint that cannot bind ``host:port``
    (``exc``: what the bind raised): the address, why, and the fixes."""
    return ("metrics_host/metrics_port: cannot serve metrics on %s: %s (fix the address, free "
            "the port or set metrics_port = 0)"
            % (url(host, port), getattr(exc, "strerror", None) or exc))


def timed(handler: Any) -> Any:
    """A subclass of the request handler class ``handler`` whose connection is dropped once
    a read or a write waits ``REQUEST_TIMEOUT_S`` (``http.server`` ends such a request)."""
    return type(handler.__name__, (handler,), {"timeout": REQUEST_TIMEOUT_S})


def start(host: str, port: int, handler: Any) -> Tuple[ThreadingHTTPServer, threading.Thread]:
    """``make_server`` of ``timed(handler)``, served from a daemon thread (each request on a
    daemon thread too)."""
    server = make_server(host, port, timed(handler))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread


def stop(server: ThreadingHTTPServer, thread: Optional[threading.Thread]) -> None:
    """Stop a server ``start`` made and wait (5 s at most) for its thread."""
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5)
