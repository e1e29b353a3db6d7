"""Data-path liveness: how soon a message gets through after a frozen peer resumes.

A ZeroMQ ROUTER in its own process answers every message; the agent's ``Transport`` (with its
heartbeat, keepalive and reconnect options) sends to it. The peer is frozen with SIGSTOP for
``--stop`` seconds, then resumed; printed: when the transport reported the peer gone
(LINK_DOWN) after the stop, and the time from SIGCONT to the first answer, per repetition.

    python3 bench/data_liveness.py --reps 3 --stop 10

With ``--netns KIND`` (blackhole or link-down; root or user namespaces) the peer sits behind a
real link instead, cut off for ``--stop`` seconds (``agent.testbed.livecheck``); printed per
repetition: LINK_DOWN after the cut, and the new connection and the first answer after the
link's return.

    python3 bench/data_liveness.py --netns blackhole --reps 3 --stop 10
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.net import transport as T  # noqa: E402
from tests.unit.test_data_liveness import _wait_reply, close_pair, open_pair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stop", type=float, default=10.0, help="seconds the peer stays frozen")
    ap.add_argument("--netns", choices=("blackhole", "link-down"), default="",
                    help="cut a real link (namespaces) instead of freezing the peer")
    args = ap.parse_args()
    if args.netns:
        return netns_reps(args.netns, args.reps, args.stop)
    proc, ctx, tr = open_pair()
    try:
        print("| rep | LINK_DOWN after stop, s | first answer after SIGCONT, s |")
        print("| --- | --- | --- |")
        for rep in range(args.reps):
            os.kill(proc.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            down = float("nan")
            while time.monotonic() - t0 < args.stop:
                if down != down and any(k == T.LINK_DOWN for k, _, _ in tr.poll(0.05)):
                    down = time.monotonic() - t0
                elif down == down:
                    tr.poll(0.05)
            os.kill(proc.pid, signal.SIGCONT)
            print("| %d | %.2f | %.2f |" % (rep + 1, down, _wait_reply(tr, 30.0)), flush=True)
            time.sleep(1.0)
    finally:
        close_pair(proc, ctx, tr)


def netns_reps(kind: str, reps: int, down_s: float) -> None:
    """The link-cut variant (module docstring): one table row per repetition."""
    from agent.testbed.livecheck import main as livecheck  # noqa: E402 (needs namespaces)
    import contextlib
    import io
    import json
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        livecheck(["--kind", kind, "--down", str(down_s), "--reps", str(reps)])
    print("| rep | LINK_DOWN after the cut, s | LINK_UP after the return, s | first answer "
          "after the return, s |")
    print("| --- | --- | --- | --- |")
    for i, line in enumerate(buf.getvalue().split("\n")):
        if line.startswith("{"):
            d = json.loads(line)
            print("| %d | %s | %s | %s |" % tuple([i + 1] + [
                "-" if d[k] is None else "%.2f" % d[k] for k in (
                    "link_down_after_s", "link_up_after_return_s", "answer_after_return_s")]))


if __name__ == "__main__":
    main()
