"""A netns testbed whose delay shim dies mid-run ends as a run an agent's death spoils: one line
saying what broke, the rate cut short kept under "partial", exit status 1 and no traceback
(``agent.testbed.deaths.NetworkBroke``, handled with ``AgentDied`` in
``agent.commands.testbed``). A real subprocess stands for the shim where the network is not
built; the whole command runs on a real netns network where this machine allows one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from agent.testbed.deaths import AgentDied, NetworkBroke, RunSpoiled
from agent.testbed.local import _check_network
from agent.testbed.netns import Device, Network, NetPlan, Shaped
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import run_serving, write_topology
from tests.unit.processes import pids_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIM_MODULE = b"-m agent.testbed.delayshim"  # how ``delayshim.start`` runs the shim


def _plan() -> NetPlan:
    devs = tuple(Device(n, "eatest-d%d" % k, k, (n,)) for k, n in enumerate("ab", start=1))
    return NetPlan("eatest", devs, (Shaped(1, 2, None, delay_ms=20.0),), delay_line="nfqueue")


def test_a_delay_shim_that_exits_spoils_the_run_as_an_agent_death_does():
    """Rule: while the network's shim runs, the run goes on; once it has exited (status 3),
    the check raises NetworkBroke, handled where an agent's death is (a RunSpoiled, not an
    AgentDied of some agent), whose one line names the network and the shim's status."""
    net = Network(_plan())
    shim = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"],
                            stdin=subprocess.PIPE)
    net._shims.append(shim)  # as ``Network.setup`` keeps the shims it started
    try:
        _check_network(net)  # running: nothing to say
        _check_network(None)  # loopback: no network to check
        shim.stdin.close()  # the stand-in exits
        assert shim.wait(timeout=60) == 3
        with pytest.raises(NetworkBroke) as got:
            _check_network(net)
    finally:
        if shim.poll() is None:
            shim.kill()
        shim.wait()
    exc = got.value
    assert isinstance(exc, RunSpoiled) and not isinstance(exc, AgentDied)
    assert exc.line() == "network: a delay shim exited with status 3: its links drop every packet"
    assert str(exc) == exc.line() and exc.tail_lines() == []


def _shim_pids():
    """Pids of the delay shims running (their Python processes, not ``ip netns exec``)."""
    return pids_with(SHIM_MODULE, unless_starts=b"ip ")


@pytest.mark.slow
def test_testbed_whose_delay_shim_is_killed_mid_run_says_so_in_one_line_and_exits_1(tmp_path):
    """Rule: `edge-agent testbed --network netns` on a topology with a delayed link, its delay
    shim SIGKILLed once the source has recorded a task, prints one error line naming the
    network (no traceback), keeps the rate cut short under "partial", exits 1 and leaves no
    namespace or shim of the run behind."""
    from agent.testbed import delayshim, netns

    problem = netns.support_problem() or (
        None if netns.kernel_has_netem() is False else "the kernel has netem: no shim runs")
    problem = problem or delayshim.support_problem()
    if problem:
        pytest.skip("netns with the delay shim: %s" % problem)
    if _shim_pids():
        pytest.skip("another delay shim runs on this machine: which to kill is not known")
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    path, _ = write_topology(tmp_path, bundle)
    with open(path) as f:
        topo = json.load(f)
    topo["links"][0]["delay_ms"] = 20  # the shim delays it: this kernel has no netem
    with open(path, "w") as f:
        json.dump(topo, f)
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", path,
                          "--network", "netns", "--policies", "cf", "--rates", "5",
                          "--duration", "60", "--no-plots", "--out", out], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    try:
        run = run_serving(out, p, 240)
        shims = _shim_pids() if run else []
        assert shims, (shims, p.poll())  # one per namespace sending on a delayed link
        os.kill(shims[0], signal.SIGKILL)
        _, stderr = p.communicate(timeout=240)
    finally:
        if p.poll() is None:  # Ctrl-C first: the testbed removes its namespaces and shims
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert p.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [l for l in stderr.splitlines() if "error:" in l]
    assert errors == ["edge-agent testbed: error: network: a delay shim killed by SIGKILL "
                      "(exit status 137): its links drop every packet"], stderr[-3000:]
    assert "  cut short: cf at 5 tasks/s: " in stderr, stderr[-3000:]
    with open(os.path.join(run, "results.json")) as f:
        res = json.load(f)
    assert [r["note"] for r in res["partial"]] == [
        "partial: network: a delay shim killed by SIGKILL (exit status 137): its links drop "
        "every packet"], res
    assert not [ns for ns in netns.testbed_namespaces()
                if ns.startswith("%s%d" % (netns.PREFIX, p.pid))]
    assert not [pid for pid in _shim_pids() if pid in shims]
