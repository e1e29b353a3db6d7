"""The metrics endpoint's HTTP server, on an IPv4 or an IPv6 address.

``http.server``'s servers are IPv4 only (``address_family = AF_INET``): a ``metrics_host`` of
``::1`` failed with "Address family for hostname not supported". The family follows the rule
of the agent's ZeroMQ sockets (``agent.net.addrfamily``): IPv6 for an IPv6 address (brackets
allowed: ``[::1]``) and for a name with IPv6 addresses only; ``::`` listens on IPv6 and IPv4
alike (``IPV6_V6ONLY`` off), so IPv4 scrapes reach it too; IPv4 for everything else.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any, Optional, Tuple

from agent.net.addrfamily import wants_ipv6


class _Server6(ThreadingHTTPServer):
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


def make_server(host: str, port: int, handler: Any) -> ThreadingHTTPServer:
    """A threading HTTP server of ``handler`` bound on ``host:port`` (port 0: a free one), in
    the family the module docstring gives; ``OSError`` when it cannot bind."""
    host = bind_host(host)
    endpoint = "tcp://%s:%d" % ("[%s]" % host if ":" in host else host, int(port))
    if host not in ("", "*") and wants_ipv6(endpoint, bind=True):  # "": IPv4, as before
        return _Server6((host, int(port)), handler)
    return ThreadingHTTPServer((host, int(port)), handler)


def start(host: str, port: int, handler: Any) -> Tuple[ThreadingHTTPServer, threading.Thread]:
    """``make_server``, served from a daemon thread (each request on a daemon thread too)."""
    server = make_server(host, port, handler)
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
