"""A render under ``--root`` (a rehearsal on one machine) keeps the device's steps on its sheets,
but units are not under the root: a sheet's ``systemctl`` line run there would start, restart
or reload that machine's own agents, with their configs, not the rehearsal's. Such a sheet
says so at its top and gives, under each ``systemctl`` line, the command that stands for it
under the root (``rehearsal:``), as does the console; a render for devices (``/``) says
nothing of it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

from agent.cli import main
from agent.config.node import load_config

ALL = [("w1a", 1), ("w1b", 1)]


def _render(tmp_path, capsys, workers, clients, root=True):
    topo, inv = tmp_path / "topo.json", tmp_path / "hosts.txt"
    topo.write_text(json.dumps({
        "bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": w, "stage": s, "last_stage": 4} for w, s in workers],
        "links": [{"from": "cam", "to": w} for w, _ in workers]}), encoding="utf-8")
    inv.write_text("cam 127.0.0.1 control=5551 data=5552 client=5560 metrics=9464\n" + "".join(
        "%s 127.0.0.1 control=%d data=%d metrics=%d\n" % (w, 5600 + 3 * i, 5601 + 3 * i,
                                                         5602 + 3 * i)
        for i, (w, _) in enumerate(workers)), encoding="utf-8")
    args = ["fleet", "render", "--topology", str(topo), "--inventory", str(inv), "--out",
            str(tmp_path / "out"), "--policy", "mdi-exit"]
    args += ["--root", str(tmp_path / "root")] if root else []
    for c in clients:
        args += ["--client", c]
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    sheets = {n: (tmp_path / "out" / "devices" / n / "SHEET.txt").read_text()
              for n in ["cam"] + [w for w, _ in workers]}
    return captured.out, sheets


def _after(lines, i):
    """The ``rehearsal:`` line that stands for the systemctl line ``i`` (the first one after
    it, before the next step)."""
    for ln in lines[i + 1:]:
        if ln.strip().startswith("rehearsal: "):
            return ln.strip()[len("rehearsal: "):]
        if not ln.startswith("   "):
            break
    raise AssertionError("no rehearsal line for %r" % lines[i])


def test_under_a_root_every_systemctl_line_has_a_rehearsal_line_acting_under_the_root(
        tmp_path, capsys):
    """Rule: under --root R, each sheet says at its top that its steps are the device's, to
    run as oneself, and every systemctl step (calibrate, start; restart after a node left,
    reload after a client left) is followed by a rehearsal line with neither sudo nor
    systemctl whose paths are R's; the console says it too."""
    root = str(tmp_path / "root")
    _render(tmp_path, capsys, ALL, ["workstation", "tablet"])
    out, sheets = _render(tmp_path, capsys, ALL[:1], ["workstation"])
    assert ("rehearsal under %s: the systemctl lines (on the sheets and above) act on this "
            "machine's own agents" % root) in out
    for n, sheet in sheets.items():
        lines = sheet.splitlines()
        assert lines[3].startswith("rehearsal under %s (--root): the steps are the device's" % root)
        ctl = [i for i, ln in enumerate(lines) if "systemctl " in ln and ln.startswith("   ")]
        assert len(ctl) >= 3, sheet  # restart, start and status; a worker's calibrate
        for i in ctl:
            instead = _after(lines, i)
            assert "sudo" not in instead and "systemctl" not in instead, instead
            assert root + "/" in instead, instead
    assert "pkill -TERM -f 'run --config %s/etc/edge-agent/'" % root in sheets["w1a"]
    calibrate = _after(sheets["w1a"].splitlines(), [
        i for i, ln in enumerate(sheets["w1a"].splitlines()) if "edge-agent-calibrate" in ln][0])
    assert calibrate.startswith("edge-agent calibrate --bundle "
                                "%s/opt/edge-agent/bundle --state-dir %s/var/lib/edge-agent "
                                "--modes all " % (root, root)), calibrate


def test_the_rehearsal_start_line_runs_the_config_the_copy_step_puts_under_the_root(
        tmp_path, capsys):
    """Rule: the rehearsal line under a sheet's start step runs this machine's `edge-agent
    run --config` (the root venv's scripts name the device's /opt path) on the node config the sheet's doctor --config line checks (where the copy step
    puts it), not /etc/edge-agent's."""
    root = str(tmp_path / "root")
    _, sheets = _render(tmp_path, capsys, ALL, ["workstation"])
    for n, sheet in sheets.items():
        lines = sheet.splitlines()
        start = _after(lines, lines.index("   sudo systemctl start edge-agent@%s" % n))
        argv = shlex.split(start.split(" (")[0])
        assert argv[:3] == ["edge-agent", "run", "--config"]  # this machine's: the root venv's
        # scripts name the device's /opt path
        doctor = [ln for ln in lines if "doctor --config" in ln]
        assert argv[3] == shlex.split(doctor[0])[-1] == "%s/etc/edge-agent/%s.toml" % (root, n)
        cfg = load_config(os.path.join(str(tmp_path / "out"), "devices", n, "etc", "edge-agent",
                                       n + ".toml"))
        assert cfg.state_dir.startswith(root + "/")


def test_the_rehearsal_reload_line_signals_only_that_nodes_agent(tmp_path, capsys):
    """Rule: after a client left, the source's rehearsal line deletes its key under R and
    sends SIGHUP (what the unit's reload sends) to the process running its config under R,
    and to no process running another node's config: pkill run as written on real
    processes."""
    _render(tmp_path, capsys, ALL, ["workstation", "tablet"])
    _, sheets = _render(tmp_path, capsys, ALL, ["workstation"])
    lines = sheets["cam"].splitlines()
    i = [k for k, ln in enumerate(lines) if "systemctl reload edge-agent@cam" in ln][0]
    rm, pkill = [shlex.split(part) for part in _after(lines, i).split(" && ")]
    assert rm == ["rm", "-f", str(tmp_path / "root" / "etc" / "edge-agent" / "clients" /
                                  "tablet.key")]
    assert pkill[:3] == ["pkill", "-HUP", "-f"]
    etc = str(tmp_path / "root" / "etc" / "edge-agent")
    wait = ("import signal, sys, time; signal.signal(signal.SIGHUP, lambda *a: sys.exit(7)); "
            "open(sys.argv[-1] + '.up', 'w').close(); time.sleep(120)")
    os.makedirs(etc, exist_ok=True)  # before the processes, which write their marks there
    procs = {n: subprocess.Popen([sys.executable, "-c", wait, "run", "--config",
                                  os.path.join(str(tmp_path), n + ".toml").replace(
                                      str(tmp_path), etc)])
             for n in ("cam", "w1a")}
    try:
        for n in procs:  # each process is up (its SIGHUP handler set) before the signal
            while not os.path.exists(os.path.join(etc, n + ".toml.up")):
                assert procs[n].poll() is None
                subprocess.run(["sleep", "0.05"], check=True)
        subprocess.run(pkill, check=True)
        assert procs["cam"].wait(timeout=60) == 7
        assert procs["w1a"].poll() is None
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_a_render_for_devices_says_nothing_of_a_rehearsal(tmp_path, capsys):
    """Rule: without --root (/), neither the console nor a sheet has a rehearsal line."""
    out, sheets = _render(tmp_path, capsys, ALL, ["workstation"], root=False)
    assert "rehearsal" not in out
    assert not [n for n, s in sheets.items() if "rehearsal" in s]
