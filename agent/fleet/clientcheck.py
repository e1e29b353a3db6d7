"""Why a client's connection to a source's client endpoint gets no input through, in words.

``agent.fleet.client.Client.check_connection`` watches a fresh connection with these: an
address that cannot be reached whatever runs there (``address_problem``), then the socket
monitor's events of the connection and its handshake (``handshake_problem``). Only ZeroMQ and
``agent.net.addrfamily`` (pure Python) are imported: any client host will do.
"""

from __future__ import annotations

import math
import os
import time
from typing import Tuple

import zmq


def handshake_problem(mon: zmq.Socket, wait_s: float, curve: bool) -> Tuple[str, bool]:
    """Read a connecting socket's monitor ``mon`` for up to ``wait_s`` seconds: ("", True)
    once a handshake succeeded, ("", False) when nothing was decided, else (the cause, in
    words, False): nothing listening (the last attempt retried), a refused client key, or a
    handshake the other end closed (with ``curve``: a wrong server key; without: no source,
    or a CURVE one)."""
    from zmq.utils.monitor import recv_monitor_message

    refused = False
    deadline = time.monotonic() + wait_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not mon.poll(max(1, int(math.ceil(left * 1000)))):
            break
        event = recv_monitor_message(mon)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return "", True
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return ("the source refused this client's key (its public key must be in the "
                    "source's client_keys_dir)"), False
        if event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            return ("the CURVE handshake failed: is the server key the source's public key, "
                    "and does the source run CURVE?" if curve else
                    "the other end closed the connection during the handshake: not a source's "
                    "client endpoint, or a CURVE one (it needs this client's keys)"), False
        if event == zmq.EVENT_CONNECT_RETRIED:
            refused = True
        elif event == zmq.EVENT_CONNECTED:
            refused = False
    if refused:
        return ("nothing listens there (connection refused after %g s): is the source running, "
                "and the endpoint right?" % wait_s), False
    return "", False


def address_problem(endpoint: str) -> str:
    """Why ``endpoint`` cannot be reached whatever runs there ("" when it may be): a tcp host
    name that does not resolve (``agent.net.addrfamily.resolution_problem``), an ipc path with
    nothing at it. (ZeroMQ only retries such an address, which its monitor tells apart from a
    refused one on no platform.)"""
    from agent.net.addrfamily import resolution_problem

    scheme, _, rest = endpoint.partition("://")
    if scheme == "ipc":
        if rest.startswith("@") or os.path.exists(rest):  # @: Linux's abstract namespace
            return ""
        return "nothing at the ipc path %s: is the source running, and the endpoint right?" % rest
    return resolution_problem(endpoint, None)  # as long as the resolver takes
