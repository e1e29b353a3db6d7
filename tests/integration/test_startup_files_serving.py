"""Which file faults stop ``edge-agent run`` at start-up (exit 78, one line naming the field, the
file and the fix) and which it serves through, with real agent processes and real files.

- An emulated worker reads and checks its ``capacity_profile`` as a real one does.
- A missing ``allowed_keys_dir`` is named as a missing folder; a ``state_dir`` that cannot be
  created on a read-only file system says where to point it.
- A folder at ``records.jsonl.1`` is no start-up fault: the source serves, its rotation warns
  and writes on to the same file.
- A source started on a nearly full disk says once that it could not keep the room it holds
  for its last record lines at a stop (``records.jsonl.reserve``).
- A testbed killed outright: its agents stop without a WARNING about its notify socket, and
  the folder of that socket is removed by the next testbed's start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from agent.config.node import dump_config
from agent.errors import EXIT_CONFIG
from agent.net.security import generate_keypair
from agent.node.records import RecordWriter
from agent.ops.reserve import RESERVE_BYTES
from agent.testbed.procs import NotifyListener
from engines.demo import DEMO_BUNDLE_DIR

from .agent_cluster import REPO, Cluster
from .tmpfs import fill, tmpfs

START_LIMIT_S = 120.0  # a start-up fault exits within seconds; this is a loaded machine's bound


def _run(cfg, path: str) -> subprocess.CompletedProcess:
    """``edge-agent run`` of ``cfg`` (written to ``path``) until it exits."""
    with open(path, "w") as f:
        f.write(dump_config(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "agent", "run", "--config", path], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=START_LIMIT_S)


def _one_line(done: subprocess.CompletedProcess, path: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_CONFIG and len(lines) == 1, done.stderr
    assert lines[0].startswith("edge-agent run: error: %s: " % path), lines[0]
    return lines[0]


def test_an_emulated_worker_refuses_a_corrupt_calibration_profile(tmp_path):
    """Rule: a worker with emulate_capacity_flops whose capacity_profile is not valid JSON
    exits 78 with one line naming capacity_profile, the file and the fix, as a worker without
    emulation does."""
    cluster = Cluster(str(tmp_path), str(DEMO_BUNDLE_DIR), {"s1": 0, "w1": 1})
    profile = tmp_path / "calibration.json"
    profile.write_text('{"entries": [')
    cfg = cluster.config("w1", capacity_profile=str(profile), emulate_capacity_flops=2e7)
    path = str(tmp_path / "w1.toml")
    line = _one_line(_run(cfg, path), path)
    assert "capacity_profile: %s: not valid JSON" % profile in line
    assert "move it away, then calibrate this device" in line


def test_a_missing_allowed_keys_dir_is_a_missing_folder_with_where_its_keys_come_from(
        tmp_path):
    """Rule: a CURVE node whose allowed_keys_dir does not exist exits 78 with one line naming
    allowed_keys_dir, the folder, and the NAME.key files to copy there (not a key's fix)."""
    cluster = Cluster(str(tmp_path), str(DEMO_BUNDLE_DIR), {"s1": 0, "w1": 1})
    keys = str(tmp_path / "keys")
    public, secret = generate_keypair(keys, "w1")
    peer_public, _ = generate_keypair(keys, "s1")
    base = cluster.config("w1")
    missing = str(tmp_path / "nokeys")
    cfg = dataclasses.replace(
        base, security="curve", secret_key_path=secret, public_key_path=public,
        allowed_keys_dir=missing,
        peers=tuple(dataclasses.replace(p, public_key=peer_public) for p in base.peers))
    path = str(tmp_path / "w1.toml")
    line = _one_line(_run(cfg, path), path)
    assert line.endswith("allowed_keys_dir: no folder %s: copy the public keys it allows there "
                         "(NAME.key files: a render's fleet/ folder; clients/ for "
                         "client_keys_dir)" % missing), line


def test_a_state_dir_that_cannot_be_made_on_a_read_only_mount_says_where_to_point_it(
        tmp_path):
    """Rule: a state_dir to be created on a read-only file system exits 78 with one line
    naming state_dir, the path, the reason and the fix (a read-only tmpfs: root only)."""
    cluster = Cluster(str(tmp_path), str(DEMO_BUNDLE_DIR), {"s1": 0, "w1": 1})
    with tmpfs(str(tmp_path / "ro"), 1 << 20, read_only=True) as ro:
        target = os.path.join(ro, "edge", "w1")
        path = str(tmp_path / "w1.toml")
        line = _one_line(_run(cluster.config("w1", state_dir=target), path), path)
    assert line.endswith("state_dir: cannot create directory %s: Read-only file system (point "
                         "state_dir at a writable folder)" % target), line


def test_a_folder_at_records_jsonl_1_is_served_through_and_warned_at_rotation(tmp_path):
    """Rule: a source whose records.jsonl.1 is a folder starts and serves; each rotation it
    tries warns with the fix and writes on to the same records.jsonl (nothing lost); it stops
    cleanly on SIGTERM and the folder is left as it was."""
    cluster = Cluster(str(tmp_path), str(DEMO_BUNDLE_DIR), {"s1": 0, "w1": 1},
                      records_max_bytes=1500, records_flush_interval_s=0.2)
    rotated = os.path.join(str(tmp_path), "s1", "records.jsonl.1")
    os.makedirs(rotated)
    try:  # w1 never runs: the source's tasks end rejected or lost, each with a record line
        cluster.start("s1", arrival_rate_tasks_s=20.0, result_timeout_s=1.0)
        cluster.wait_for(lambda: any("records.jsonl.1 is not a file: move it away (writing on "
                                     "to the same file)" in line
                                     for line in cluster.procs["s1"].log_lines(400, 1 << 20)),
                         180.0, "the rotation's warning")
    finally:
        cluster.stop_all()
    assert cluster.procs["s1"].returncode == 0, cluster.tail("s1")
    with open(os.path.join(str(tmp_path), "s1", "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) >= 4 and len({r["id"] for r in recs}) == len(recs)
    assert os.path.isdir(rotated) and os.listdir(rotated) == []
    assert not os.path.exists(os.path.join(str(tmp_path), "s1", "records.jsonl.2"))


def test_a_source_on_a_nearly_full_disk_says_it_cannot_keep_its_reserve(tmp_path, caplog):
    """Rule: where the 1 MiB reserve for a stop's last record lines cannot be made at start (a
    nearly full disk), the source says so once, naming the file and the room left, and leaves
    no partial file; with room, the reserve is made and nothing is said."""
    with tmpfs(str(tmp_path / "disk"), 2 << 20) as disk:
        filler = fill(disk)
        os.truncate(filler, max(0, os.path.getsize(filler) - (256 << 10)))
        path = os.path.join(disk, "records.jsonl")
        with caplog.at_level(logging.WARNING, logger="agent.run"):
            writer = RecordWriter(path)
        told = [r.getMessage() for r in caplog.records if "reserve" in r.getMessage()]
        assert len(told) == 1 and told[0].startswith(
            "cannot keep %s.reserve (%d bytes of room for the last record lines at a stop; "
            % (path, RESERVE_BYTES)), told
        assert "bytes free): a stop while the disk is full may leave lines unwritten" in told[0]
        assert not os.path.exists(path + ".reserve")
        writer.close()
        os.unlink(filler)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="agent.run"):
            writer = RecordWriter(path)
        assert os.path.getsize(path + ".reserve") == RESERVE_BYTES
        assert not [r for r in caplog.records if "reserve" in r.getMessage()]
        writer.close()


PARENT = """
import sys, time
from agent.config.node import load_config
from agent.testbed.procs import LocalAgents
agents = LocalAgents(sys.argv[1], fresh=False)
agents.write({"w4": load_config(sys.argv[2])})
print(agents.start(["w4"], 120.0)[0].pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_a_sigkilled_testbeds_agent_stops_without_a_notify_warning_and_its_folder_goes(
        tmp_path):
    """Rule: after the testbed is SIGKILLed, its agent's log ends with its clean stop and no
    WARNING about the notify socket that went with the testbed; the socket's folder is left
    behind, and the next testbed's start (a new NotifyListener) removes it."""
    cluster = Cluster(str(tmp_path / "cfg"), str(DEMO_BUNDLE_DIR), {"s1": 0, "w4": 4})
    cfg = cluster.config("w4")  # the last stage: its one peer, the source, need not run
    os.makedirs(cfg.state_dir, exist_ok=True)
    with open(str(tmp_path / "w4.toml"), "w") as f:
        f.write(dump_config(cfg))
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    notify_tmp = tempfile.mkdtemp(prefix="nd-")  # short: a socket path holds at most 107 bytes
    env = dict(os.environ, TMPDIR=notify_tmp, PYTHONPATH=REPO)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, run_dir, str(tmp_path / "w4.toml")],
                              stdout=subprocess.PIPE, cwd=REPO, text=True, env=env)
    agent_pid = 0
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), "the parent did not start the agent: %r" % line
        agent_pid = int(line)
        parent.kill()
        parent.wait(30)
        end = time.monotonic() + 90.0
        while not _gone(agent_pid) and time.monotonic() < end:
            time.sleep(0.1)
        assert _gone(agent_pid), "the agent still runs after its parent was SIGKILLed"
        with open(os.path.join(run_dir, "w4.log"), encoding="utf-8") as f:
            log = f.read()
        assert "stopped: " in log, log[-2000:]
        assert not [l for l in log.splitlines() if "WARNING" in l and "sd_notify" in l], log
        left = [n for n in os.listdir(notify_tmp) if n.startswith("edge-notify-")]
        assert len(left) == 1, left
        listener = NotifyListener(notify_tmp)
        try:
            assert left[0] not in os.listdir(notify_tmp)
        finally:
            listener.close()
        assert not [n for n in os.listdir(notify_tmp) if n.startswith("edge-notify-")]
    finally:
        if parent.poll() is None:
            parent.kill()
        if agent_pid and not _gone(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
        shutil.rmtree(notify_tmp, ignore_errors=True)
