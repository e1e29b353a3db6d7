"""The netns testbed for real: namespaces, kernel-shaped links, injected faults.

Needs root or user namespaces (and iproute2); each test skips with the reason where neither
works. The loopback fault test runs anywhere.
"""

import json
import os
import subprocess
import sys

import pytest

from agent.cli import main
from agent.testbed import netns
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wrapper():
    """Argv prefix that gives a command the right to build namespaces; skip where none does."""
    problem = netns.support_problem()
    if problem is None:
        return []
    if "not found" not in problem:
        wrap = netns.userns_wrapper()
        if wrap is not None:
            return wrap
    pytest.skip("netns testbed: %s, and user namespaces are not allowed here either" % problem)


def test_a_transfer_over_a_link_shaped_to_r_takes_b_over_r_and_leaves_no_namespace():
    """Smoke test: three namespaces, a -> b shaped to R; B bytes from a to b take at least
    0.85 B/R (the shaping is in force; a loaded machine only makes it slower, so the upper
    bound, 3 B/R, is loose: it catches a rate set in the wrong unit) while a -> c (unshaped)
    takes less than half of B/R (it is not shaped to R); one message alone on the idle link is
    not let through at once (it takes at least half its wire bytes over R: no segmentation
    offload, no free burst); no testbed namespace is left afterwards."""
    wrap = _wrapper()
    rate, nbytes = 200e3, 600000
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run(wrap + [sys.executable, "-m", "agent.testbed.netcheck", "--rate",
                                 str(rate), "--bytes", str(nbytes)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60,
                         universal_newlines=True)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    b_over_r = nbytes / rate
    assert 0.85 * b_over_r <= got["shaped_s"] <= 3.0 * b_over_r, got
    # a -> c shaped to R too would take 0.85 B/R at least; unshaped, the 600 kB take
    # milliseconds of CPU, so half of B/R (1.5 s) leaves a loaded machine's scheduler room
    assert got["unshaped_s"] < 0.5 * b_over_r, got
    assert got["message_s"] >= 0.5 * got["message_wire_s"], got
    assert got["left"] == []
    if not wrap:  # as root the namespaces are the host's: none may be left there
        assert not [ns for ns in netns.testbed_namespaces() if ns.startswith(got["prefix"])]


def _faulty_topology(tmp_path, faults, **agent):
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    path, _ = write_topology(tmp_path, bundle)
    topo = json.loads(open(path).read())
    topo["faults"] = faults
    topo["agent"].update(agent)
    with open(path, "w") as f:
        json.dump(topo, f)
    return path


def test_loopback_run_survives_an_injected_kill_and_stop_and_reports_each_phase(tmp_path, capsys):
    """A worker killed (restarted 1 s later), another stopped for 1 s and a third restarted do
    not abort the run: nothing is lost (a task offered while a stage has no live worker is
    rejected at once with its reason, which is an answer, not a loss), results.json lists the
    faults with delay before, during and after them, and the phase table is printed."""
    topo = _faulty_topology(tmp_path, [
        {"at": 1.0, "duration": 1.0, "kind": "kill", "target": "slow"},
        {"at": 2.5, "duration": 1.0, "kind": "stop", "target": "fast"},
        {"at": 3.0, "kind": "restart", "target": "w2"}])
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", topo, "--policies", "cf", "--rates", "8",
               "--duration", "4", "--out", str(out), "--no-plots"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    run = json.loads((out / "latest" / "results.json").read_text())["runs"][0]
    assert run["lost"] == 0 and run["completed"] + run["rejected"] == run["created"]
    assert run["completed"] >= run["created"] // 2
    assert [f["kind"] for f in run["faults"]] == ["kill", "stop", "restart"]
    assert set(run["phases"]) == {"before", "during", "after"}
    assert run["phases"]["during"]["tasks"] > 0
    assert "delay per phase" in captured.out


def test_loopback_refuses_a_network_fault_in_one_line(tmp_path, capsys):
    """link-down needs --network netns: a usage error naming it, before anything starts."""
    topo = _faulty_topology(tmp_path, [{"at": 1, "duration": 1, "kind": "link-down",
                                        "target": "fast"}])
    rc = main(["testbed", "--topology", topo, "--policies", "cf", "--rates", "8",
               "--duration", "1", "--out", str(tmp_path / "out"), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and "link-down needs --network netns" in err


def test_netns_run_with_link_down_and_loss_loses_nothing_and_removes_its_namespaces(tmp_path):
    """Agents in namespaces, links shaped by the kernel: a link down for 1 s and 5% loss on
    every link; nothing lost, both faults reported, no namespace of the run left."""
    wrap = _wrapper()
    topo = _faulty_topology(tmp_path, [
        {"at": 1.0, "duration": 1.0, "kind": "link-down", "target": "cam->fast"},
        {"at": 1.0, "duration": 2.0, "kind": "loss", "target": "*", "loss": 0.05}])
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    p = subprocess.run(wrap + [sys.executable, "-m", "agent", "testbed", "--topology", topo,
                               "--network", "netns", "--policies", "cf", "--rates", "8",
                               "--duration", "4", "--out", str(out), "--no-plots"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300,
                       universal_newlines=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "network: netns, 4 devices" in p.stdout
    assert "links shaped in the kernel (" in p.stdout and "links emulated" not in p.stdout
    run = json.loads((out / "latest" / "results.json").read_text())["runs"][0]
    assert run["lost"] == 0 and run["completed"] == run["created"] > 0
    assert [f["kind"] for f in run["faults"]] == ["link-down", "loss"]
    assert run["phases"]["during"]["tasks"] > 0
    prefix = [l for l in p.stdout.splitlines() if "namespaces eatb" in l][0].split(
        "namespaces ")[1].split("-*")[0]
    assert not [ns for ns in netns.testbed_namespaces() if ns.startswith(prefix + "-")]


def test_cleanup_removes_what_a_dead_testbed_left_and_keeps_a_running_ones(tmp_path):
    """--cleanup deletes namespaces named after a pid that no longer runs and keeps those of a
    live testbed (root only: in a user namespace nothing outlives the testbed)."""
    if netns.support_problem() is not None:
        pytest.skip("needs root with network namespaces: %s" % netns.support_problem())
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = "%s%d-hub" % (netns.PREFIX, dead.pid), "%s%d-hub" % (netns.PREFIX, os.getppid())
    for ns in (stale, live):
        netns.run_command(["ip", "netns", "add", ns])
    try:
        env = dict(os.environ, PYTHONPATH=REPO)
        out = subprocess.run([sys.executable, "-m", "agent", "testbed", "--cleanup"],
                             stdout=subprocess.PIPE, env=env, timeout=60,
                             universal_newlines=True).stdout
        assert "deleted namespace %s" % stale in out and "kept namespace %s" % live in out
        assert stale not in netns.testbed_namespaces() and live in netns.testbed_namespaces()
    finally:
        for ns in (stale, live):
            netns.delete_namespace(ns)


def test_ctrl_c_in_the_middle_of_a_rate_keeps_its_records_so_far_as_a_partial_result(tmp_path):
    """SIGINT while the only rate is under load: exit 130 and results.json holds no finished
    run but that rate's summary so far under "partial", marked as interrupted."""
    import signal

    topo = _faulty_topology(tmp_path, [])
    out = str(tmp_path / "out")
    p = start_under_load(topo, out, dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"))
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-3000:]
    res = json.loads(open(os.path.join(out, "latest", "results.json")).read())
    assert res["runs"] == [] and res["complete"] is False
    assert len(res["partial"]) == 1 and res["partial"][0]["note"] == "partial: interrupted"
    assert res["partial"][0]["completed"] > 0
    assert "the run cut short" in stderr


def test_a_run_that_cannot_build_namespaces_reruns_itself_once_inside_a_user_namespace(
        monkeypatch, capfd):
    """Rule: not root, ``--network netns`` runs the same command again under the user-namespace
    wrapper, marked by the hidden ``--in-userns`` flag (no environment variable); the marked
    run that still cannot build namespaces says why in one line instead of re-running again."""
    from agent.testbed import netns

    monkeypatch.setattr(netns, "support_problem", lambda: "needs root (or CAP_NET_ADMIN)")
    # the wrapper is a real process that prints the command it was asked to run
    monkeypatch.setattr(netns, "userns_wrapper", lambda: [
        sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"])
    monkeypatch.setattr(sys, "argv", ["edge-agent", "testbed", "--network", "netns"])
    assert main(["testbed", "--network", "netns"]) == 0
    argv = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert argv[1:] == ["-m", "agent", "testbed", "--network", "netns", "--in-userns"]
    assert main(["testbed", "--network", "netns", "--in-userns"]) == 2
    assert "--network netns: needs root" in capfd.readouterr().err


def start_under_load(topo, out, env, **popen):
    """A testbed of ``topo`` (cf at 8 tasks/s for 60 s, records under ``out``) started and
    waited for until its source has written a record line: a rate under load."""
    import time

    p = subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", topo,
                          "--policies", "cf", "--rates", "8", "--duration", "60", "--out", out,
                          "--no-plots"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, **popen)
    records = os.path.join(out, "latest", "cf", "cam", "records.jsonl")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        if os.path.exists(records) and os.path.getsize(records) > 0:
            break
        time.sleep(0.2)
    return p
