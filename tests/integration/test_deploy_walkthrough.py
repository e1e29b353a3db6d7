"""docs/deployment.md's walkthrough, run on a loopback "fleet": render -> install -> keys ->
calibrate -> start -> status -> drive load -> report, every workstation command as the docs
write it (each is checked to appear there verbatim). Device steps that need root or systemd
run as what they stand for, under an install --root folder: the unit's ExecStart
(``edge-agent run --config ...`` with the sd_notify socket systemd gives it) and the
calibration unit's command. Real agents, real CURVE, real onnxruntime."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np

from agent.fleet.client import Client, ClientKeys
from agent.net.security import generate_keypair
from agent.testbed.ports import free_ports
from agent.testbed.procs import AgentProcess, NotifyListener, wait_ready
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "deployment.md")

# The workstation's commands, as docs/deployment.md writes them.
RENDER = "edge-agent fleet render --topology my-topology.json --inventory hosts.txt --out fleet-out"
STATUS = "edge-agent status --fleet fleet-out"
SUBMIT = ("edge-agent submit --fleet fleet-out --source cam --images images.npz --count 5")
DRIVE = ("edge-agent testbed --topology fleet-out/testbed.json --policies dtoee --rates 5 "
         "--duration 4 --out runs")
REPORT = "edge-agent report runs --out report-out"
# what the rehearsal adds to `fleet render` (docs: "Rehearse on one machine")
REHEARSAL = "--root $ROOT --bundle $ROOT/opt/edge-agent/bundle --emulate"


def _cli(cwd, line, env, timeout=300):
    """Run one documented ``edge-agent ...`` line as ``python -m agent ...``."""
    argv = [a.replace("$ROOT", env["ROOT"]) for a in shlex.split(line)]
    assert argv[0] == "edge-agent"
    return subprocess.run([sys.executable, "-m", "agent"] + argv[1:], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def test_the_documented_walkthrough_runs_on_a_loopback_fleet(tmp_path):
    """Rendered configs start real agents over CURVE; a workstation client drives them through
    the CURVE client endpoint; status shows every node alive with its routing; report
    reproduces the testbed's table from the records; a client whose key is not allowed gets
    no answer and the source counts it."""
    with open(DOC, "r", encoding="utf-8") as f:
        doc = f.read()
    for line in (RENDER, STATUS, SUBMIT, DRIVE, REPORT, REHEARSAL):
        assert line in doc, "docs/deployment.md no longer says: " + line

    work = str(tmp_path)
    root = os.path.join(work, "rehearsal")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, ROOT=root)
    tiny = build_two_stage_bundle(os.path.join(work, "tiny"))
    topo_path, _ = write_topology(tmp_path, tiny)
    shutil.move(topo_path, os.path.join(work, "my-topology.json"))
    nodes = ["cam", "fast", "slow", "w2"]
    ports = free_ports(4 * len(nodes))
    with open(os.path.join(work, "hosts.txt"), "w") as f:
        for i, n in enumerate(nodes):
            f.write("%s 127.0.0.1 control=%d data=%d client=%d metrics=%d\n"
                    % ((n,) + tuple(ports[4 * i:4 * i + 4])))
    with np.load(os.path.join(os.path.dirname(tiny), "replay.npz")) as z:
        np.savez(os.path.join(work, "images.npz"), x=z["x"][:20], y=z["y"][:20])

    # 1. render (twice: the second keeps every key)
    proc = _cli(work, RENDER + " " + REHEARSAL, env)
    assert proc.returncode == 0, proc.stderr
    assert "keys: 5 made, 0 kept" in proc.stdout
    proc = _cli(work, RENDER + " " + REHEARSAL, env)
    assert "keys: 0 made, 5 kept" in proc.stdout, proc.stdout + proc.stderr

    # 2. install into the rehearsal root, then copy each device's files where install made room
    cmd = [sys.executable, "-m", "agent", "install", "--root", root, "--no-pip", "--no-enable"]
    for n in nodes:
        cmd += ["--instance", n]
    proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shutil.copytree(tiny, os.path.join(root, "opt", "edge-agent", "bundle"))
    for n in nodes:  # the sheet's copy step (`sudo rm -rf .../fleet && sudo cp -r ...`)
        _copy_tree(os.path.join(work, "fleet-out", "devices", n, "etc", "edge-agent"),
                   os.path.join(root, "etc", "edge-agent"))

    # 3. calibrate: what edge-agent-calibrate.service runs, on the CPU path
    proc = subprocess.run([sys.executable, "-m", "agent", "calibrate", "--bundle",
                           os.path.join(root, "opt", "edge-agent", "bundle"), "--seconds", "0.3",
                           "--warmup", "0.1", "--state-dir",
                           os.path.join(root, "var", "lib", "edge-agent")],
                          cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(os.path.join(root, "var", "lib", "edge-agent", "calibration.json"))

    # 4. start: the unit's ExecStart with systemd's notify socket, READY awaited
    listener = NotifyListener()
    procs = []
    try:
        os.makedirs(os.path.join(work, "logs"))
        for n in nodes:
            procs.append(AgentProcess(n, os.path.join(root, "etc", "edge-agent", n + ".toml"),
                                      os.path.join(work, "logs", n + ".log"), listener.path))
        wait_ready(procs, listener, 180.0)
        _walk_the_running_fleet(work, env, nodes)
    finally:
        for p in procs:
            p.stop()
        listener.close()


def _copy_tree(src, dst):
    for dirpath, _dirs, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(dirpath, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            shutil.copy2(os.path.join(dirpath, name), os.path.join(target, name))


def _walk_the_running_fleet(work, env, nodes):
    # 5. status: every node alive, the source and the stage-1 workers with their routing
    deadline = time.monotonic() + 60
    while True:
        proc = _cli(work, STATUS, env)
        table = proc.stdout
        rows = {line.split()[0]: line for line in table.splitlines() if line.split()
                and line.split()[0] in nodes}
        routed = all(("fast" in rows.get(n, "") and "slow" in rows.get(n, "")) for n in ["cam"]) \
            and "w2 1.00" in rows.get("fast", "")
        if proc.returncode == 0 and routed or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert proc.returncode == 0, table + proc.stderr
    assert "%d/%d nodes answering" % (len(nodes), len(nodes)) in table
    assert all(rows[n].split()[1] == "yes" for n in nodes), table
    assert routed, table
    print(table)  # shown with pytest -s: the terminal example in docs/deployment.md

    # 6. drive load through the CURVE client endpoint: one input at a time, then the testbed
    proc = _cli(work, SUBMIT, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 sent: 5 completed" in proc.stdout
    proc = _cli(work, DRIVE, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tb_table = _table_of(proc.stdout)
    run = json.loads(open(os.path.join(work, "runs", "latest", "results.json")).read())["runs"]
    assert run[0]["created"] > 0 and run[0]["lost"] == 0

    # 7. report: the testbed's table again, from the records alone
    proc = _cli(work, REPORT, env)
    assert proc.returncode == 0, proc.stderr
    assert _table_of(proc.stdout) == tb_table
    assert os.path.getsize(os.path.join(work, "report-out", "delay_cdf.png")) > 0

    # a client whose key is not on the source's allow-list gets no answer, and is counted
    ikey, isecret = generate_keypair(os.path.join(work, "intruder"), "intruder")
    keys = ClientKeys.load(isecret, os.path.join(work, "fleet-out", "keys", "cam.key"))
    man = json.loads(open(os.path.join(work, "fleet-out", "fleet.json")).read())
    with np.load(os.path.join(work, "images.npz")) as z:
        x = z["x"][:1]
    with Client(man["nodes"]["cam"]["client"], keys, timeout_s=3.0) as c:
        answer = c.infer(x)
    assert answer.outcome == "lost" and answer.reason.startswith("no answer")
    proc = _cli(work, STATUS + " --json", env)
    cam = json.loads(proc.stdout)["cam"]
    assert cam["drops"].get("client_refused", 0) >= 1, cam


def _table_of(text):
    """The results table (header to the line before the first blank line after it)."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("policy "))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]
