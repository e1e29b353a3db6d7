"""Link delay without sch_netem: the NFQUEUE shim on a real netns network.

Needs root or user namespaces, iproute2, iptables and the kernel's nfnetlink_queue; skips with
the reason where any is missing."""

import json
import os
import subprocess
import sys

import pytest

from agent.testbed import delayshim
from tests.integration.test_testbed_netns import _wrapper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Two devices, a -> b delayed by the shim; UDP round trips from a to b (the echo is not
# delayed) and to the hub gateway (not a delayed link); what is left afterwards.
SCRIPT = r"""
import json, os, socket, subprocess, sys, time
from agent.testbed.netns import (PREFIX, Device, Network, NetPlan, Shaped, namespace_pids,
                                 testbed_namespaces)
ECHO = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind((sys.argv[1], 9999)); print('up', flush=True)\n"
        "while True:\n    d, a = s.recvfrom(2048); s.sendto(d, a)\n")
prefix = "%s%d" % (PREFIX, os.getpid())
devs = tuple(Device(n, "%s-d%d" % (prefix, k), k, (n,)) for k, n in enumerate("ab", start=1))
plan = NetPlan(prefix, devs, (Shaped(1, 2, None, delay_ms=float(sys.argv[1])),),
               delay_line="nfqueue")
with Network(plan) as net:
    echo = subprocess.Popen(net.wrap("b") + [sys.executable, "-c", ECHO, plan.address_of("b")],
                            stdout=subprocess.PIPE)
    echo.stdout.readline()
    probe = ("import socket, sys, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.settimeout(10); out = []\n"
             "for i in range(5):\n    t = time.monotonic(); s.sendto(b'x', (sys.argv[1], 9999))\n"
             "    s.recvfrom(64); out.append(time.monotonic() - t)\nprint(min(out))\n")
    rtt = float(subprocess.run(net.wrap("a") + [sys.executable, "-c", probe, plan.address_of("b")],
                               check=True, stdout=subprocess.PIPE, timeout=60).stdout)
    shims = [p.pid for p in net._shims]
    alive = net.problem()
    echo.kill()
left = [ns for ns in testbed_namespaces() if ns.startswith(prefix + "-")]
gone = all(subprocess.run(["kill", "-0", str(p)], stderr=subprocess.DEVNULL).returncode != 0
           for p in shims)
print(json.dumps({"rtt_s": rtt, "problem": alive, "left": left, "shims": len(shims),
                  "shims_gone": gone}))
"""


def test_a_delayed_link_holds_every_packet_for_its_delay_and_everything_goes_at_close():
    """A link with delay_ms on a kernel without netem: round trips over it take at least the
    delay (the shim holds each packet), the shim stays up while the network lives, and the
    namespaces and the shim process are gone after close."""
    wrap = _wrapper()
    if not wrap:
        problem = delayshim.support_problem()
        if problem:
            pytest.skip("delay shim: %s" % problem)
    elif subprocess.run(["sh", "-c", "command -v iptables"], stdout=subprocess.DEVNULL).returncode:
        pytest.skip("delay shim: iptables not found (Debian package iptables)")
    delay_ms = 80.0
    out = subprocess.run(wrap + [sys.executable, "-c", SCRIPT, str(delay_ms)],
                         env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    got = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert got["rtt_s"] >= delay_ms / 1000.0, got
    assert got["problem"] is None and got["shims"] == 1, got
    assert got["left"] == [] and got["shims_gone"], got


def test_a_topology_with_delay_is_planned_on_the_shim_or_refused_naming_what_is_missing(
        tmp_path):
    """network_plan picks sch_netem where the kernel has it, else the NFQUEUE shim, else a
    UsageError naming what is missing; a plan without delays keeps the default."""
    from agent.commands.testbed import network_plan
    from agent.errors import UsageError
    from agent.testbed import netns
    from agent.testbed.topology import load_topology

    if netns.support_problem() is not None:
        pytest.skip("netns: %s" % netns.support_problem())
    src = json.load(open(os.path.join(REPO, "agent", "testbed", "topologies", "slow-link.json")))
    link = next(l for l in src["links"] if l.get("rate_bytes_s"))
    link["delay_ms"] = 20
    path = tmp_path / "t.json"
    path.write_text(json.dumps(src))
    try:
        plan = network_plan(load_topology(str(path)))
    except UsageError as exc:
        assert "sch_netem" in str(exc) and "NFQUEUE" in str(exc)
        return
    expected = "netem" if netns.kernel_has_netem() else "nfqueue"
    assert plan.delay_line == expected
    assert any(s.delay_ms == 20 for s in plan.shaped)
