"""Cost of CURVE on the data plane: acknowledged DEALER -> ROUTER transfers of one task's
feature tensor, plain vs CurveZMQ, over loopback TCP in one process (two threads).

    python3 bench/curve_overhead.py [--seconds 3] [--sizes 4096,65536,1048576]

Prints one row per size: tasks/s and MB/s for each mode and CURVE's relative slowdown.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.net.security import (  # noqa: E402
    CurveSecurity,
    NoSecurity,
    generate_keypair,
    load_secret_key_file,
)


def _securities():
    d = tempfile.mkdtemp()
    keys = {}
    for n in ("server", "client"):
        public_file, _ = generate_keypair(d, n)
        keys[n] = load_secret_key_file(public_file + "_secret")
    server = CurveSecurity(*keys["server"], allowed_public_keys=[keys["client"][0]])
    client = CurveSecurity(*keys["client"], allowed_public_keys=[keys["server"][0]])
    return {"plain": (NoSecurity(), NoSecurity(), None),
            "curve": (server, client, keys["server"][0])}


def measure(server_sec, client_sec, server_key, size: int, seconds: float) -> float:
    """Acknowledged transfers per second of ``size``-byte payloads (one in flight at a time,
    as a sender waits for the ACK before forgetting a task)."""
    ctx = zmq.Context()
    server_sec.start(ctx)
    router = ctx.socket(zmq.ROUTER)
    server_sec.apply_server(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve():
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(100):
                ident, _hdr, _payload = router.recv_multipart(copy=False)
                router.send_multipart([ident, b"ACK"])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    dealer = ctx.socket(zmq.DEALER)
    client_sec.apply_client(dealer, server_key)
    dealer.connect("tcp://127.0.0.1:%d" % port)
    payload = os.urandom(size)
    for _ in range(20):  # handshake and warm-up
        dealer.send_multipart([b"TASK", payload], copy=False)
        dealer.recv()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        dealer.send_multipart([b"TASK", payload], copy=False)
        dealer.recv()
        n += 1
    rate = n / (time.perf_counter() - start)
    stop.set()
    t.join()
    dealer.close(0)
    router.close(0)
    server_sec.stop()
    ctx.term()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="4096,65536,1048576")
    args = ap.parse_args()
    logging.getLogger("agent.net.security").setLevel(logging.ERROR)  # the plain-mode warning
    secs = _securities()
    print("| payload bytes | plain tasks/s | curve tasks/s | plain MB/s | curve MB/s | curve slowdown |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        plain = measure(*secs["plain"], size, args.seconds)
        curve = measure(*secs["curve"], size, args.seconds)
        print("| %d | %.0f | %.0f | %.1f | %.1f | %.0f%% |" % (
            size, plain, curve, plain * size / 1e6, curve * size / 1e6,
            100.0 * (plain / curve - 1.0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
