"""A check of data-path liveness on a real network: a data connection across a link that goes
dead is rebuilt, and messages flow again after the link returns.

``python -m agent.testbed.livecheck --kind blackhole --down 5`` builds devices a and b (netns,
``agent.testbed.netns``), runs an echo ROUTER in b and the agent's own ``Transport`` in a,
which sends b a ping every ``PING_S`` and reports its events (b answers through its own
``Transport``: both ends are the agents' sockets); then breaks b (a ``blackhole``:
every packet to and from b dropped; or ``link-down``: b's interface down) for ``--down``
seconds, the same commands as the testbed's faults (``inject.fault_commands``), and restores
it. It prints one JSON object: the seconds from the fault's start to the transport's
``LINK_DOWN``, from its end to the next ``LINK_UP`` and to the first answer, how many
connections dropped and came up, and the testbed namespaces left after the network is
removed. As root it runs directly; otherwise inside ``unshare -Urnm``
(``agent.testbed.netns.userns_wrapper``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

from agent.testbed.faults import Fault
from agent.testbed.inject import fault_commands
from agent.testbed.netns import PREFIX, Device, Network, NetPlan, testbed_namespaces

PING_S = 0.05  # how often a's transport sends b a ping
CTRL_PORT, DATA_PORT = 7300, 7301

ECHO = r"""
import sys, zmq
from agent.config.node import Peer
from agent.net import transport as T
me, peer, ctrl, data = sys.argv[1:5]
tr = T.Transport(zmq.Context(), "b", "tcp://%s:%s" % (me, ctrl), "tcp://%s:%s" % (me, data),
                 [Peer("a", 1, "tcp://%s:%s" % (peer, ctrl), "tcp://%s:%s" % (peer, data))])
tr.open()
print("ready", flush=True)
while True:
    for kind, who, frames in tr.poll(1.0):
        if kind == T.DATA:
            tr.reply(who, frames)
"""

SENDER = r"""
import json, sys, time, zmq
from agent.config.node import Peer
from agent.net import transport as T
me, peer, ctrl, data, ping_s = sys.argv[1:6]
tr = T.Transport(zmq.Context(), "a", "tcp://%s:%s" % (me, ctrl), "tcp://%s:%s" % (me, data),
                 [Peer("b", 1, "tcp://%s:%s" % (peer, ctrl), "tcp://%s:%s" % (peer, data))])
tr.open()
names = {T.LINK_DOWN: "down", getattr(T, "LINK_UP", "-"): "up", T.REPLY: "reply"}
nxt = 0.0
while True:
    now = time.monotonic()
    if now >= nxt:
        tr.send("b", [b"ping"])
        nxt = now + float(ping_s)
    for kind, _, _ in tr.poll(0.01):
        if kind in names:
            print(json.dumps({"ev": names[kind], "t": time.monotonic()}), flush=True)
"""


def two_devices(prefix: str) -> NetPlan:
    """Devices a and b, one agent each, links unshaped."""
    devs = tuple(Device(n, "%s-d%d" % (prefix, k), k, (n,))
                 for k, n in enumerate(("a", "b"), start=1))
    return NetPlan(prefix, devs, ())


def _reader(proc: subprocess.Popen, out: "queue.Queue") -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            out.put(json.loads(line))
        except ValueError:
            continue


def _first(events: List[Dict], ev: str, after: float) -> Optional[float]:
    got = [e["t"] for e in events if e["ev"] == ev and e["t"] >= after]
    return min(got) - after if got else None


def run_check(net: Network, kind: str, down_s: float, wait_s: float = 30.0) -> Dict:
    """Break b for ``down_s`` seconds; the transport's events around it (module docstring)."""
    plan = net.plan
    a, b = plan.address_of("a"), plan.address_of("b")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    echo = subprocess.Popen(net.wrap("b") + [sys.executable, "-c", ECHO, b, a, str(CTRL_PORT),
                                             str(DATA_PORT)],
                            stdout=subprocess.PIPE, universal_newlines=True, env=env)
    sender = None
    try:
        assert echo.stdout is not None
        echo.stdout.readline()  # ready
        sender = subprocess.Popen(net.wrap("a") + [sys.executable, "-c", SENDER, a, b,
                                                   str(CTRL_PORT), str(DATA_PORT), str(PING_S)],
                                  stdout=subprocess.PIPE, universal_newlines=True, env=env)
        events: "queue.Queue" = queue.Queue()
        threading.Thread(target=_reader, args=(sender, events), daemon=True).start()
        got: List[Dict] = []

        def wait_for(ev: str, after: float, limit_s: float) -> None:
            end = time.monotonic() + limit_s
            while _first(got, ev, after) is None and time.monotonic() < end:
                try:
                    got.append(events.get(timeout=0.1))
                except queue.Empty:
                    continue

        wait_for("reply", 0.0, wait_s)
        begin, end = fault_commands(Fault(0.0, down_s, kind, "b"), 0, plan)
        t_begin = time.monotonic()
        net.run(begin)
        wait_for("__none__", 0.0, down_s)  # collect events while b is cut off
        net.run(end)
        t_end = time.monotonic()
        wait_for("reply", t_end, wait_s)
        wait_for("__none__", 0.0, 0.5)  # what follows the first answer at once
        return {"kind": kind, "down_s": down_s,
                "answered_before": _first(got, "reply", 0.0) is not None,
                "link_down_after_s": _first(got, "down", t_begin),
                "link_up_after_return_s": _first(got, "up", t_end),
                "answer_after_return_s": _first(got, "reply", t_end),
                "drops": sum(1 for e in got if e["ev"] == "down" and e["t"] >= t_begin),
                "ups": sum(1 for e in got if e["ev"] == "up" and e["t"] >= t_begin)}
    finally:
        for p in (sender, echo):
            if p is not None:
                p.kill()
                p.wait()


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.testbed.livecheck")
    p.add_argument("--kind", choices=("blackhole", "link-down"), default="blackhole")
    p.add_argument("--down", type=float, default=5.0, help="seconds b stays cut off")
    p.add_argument("--reps", type=int, default=1, help="faults in a row, one JSON line each")
    args = p.parse_args(argv)
    plan = two_devices("%s%d" % (PREFIX, os.getpid()))
    results = []
    with Network(plan) as net:
        for _ in range(args.reps):
            results.append(run_check(net, args.kind, args.down))
    left = [ns for ns in testbed_namespaces() if ns.startswith(plan.prefix + "-")]
    for r in results:
        print(json.dumps(dict(r, prefix=plan.prefix + "-", left=left)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
