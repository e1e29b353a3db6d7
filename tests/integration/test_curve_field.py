"""A rendered CURVE fleet whose node config holds a stale key for one peer: `edge-agent run`
refuses to start with one line naming the peer, both keys and the allow-list file, exit 78,
instead of serving with every handshake to that peer failing without a word."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import zmq

from engines.demo import DEMO_BUNDLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(cwd, *argv, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "agent"] + list(argv), cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def test_a_stale_peer_key_in_a_rendered_config_stops_run_with_exit_78(tmp_path):
    """Re-keying node wb on the workstation but editing only wa's allow-list leaves wa's
    [[peers]] public_key stale: wa's start-up says so in one line and exits 78."""
    work = str(tmp_path)
    topo = {"bundle": DEMO_BUNDLE_DIR, "sources": [{"id": "cam", "share": 1.0}],
            "workers": [{"id": "wa", "stage": 1, "last_stage": 2},
                        {"id": "wb", "stage": 3, "last_stage": 4}],
            "links": [{"from": "cam", "to": "wa"}, {"from": "wa", "to": "wb"}]}
    with open(os.path.join(work, "topo.json"), "w") as f:
        json.dump(topo, f)
    with open(os.path.join(work, "hosts.txt"), "w") as f:
        f.write("cam 10.0.0.10\nwa 10.0.0.11\nwb 10.0.0.12\n")  # nothing binds here
    root = os.path.join(work, "root")
    proc = _cli(work, "fleet", "render", "--topology", "topo.json", "--inventory", "hosts.txt",
                "--out", "fleet-out", "--root", root, "--bundle", DEMO_BUNDLE_DIR,
                "--policy", "mdi-exit")  # its workers may hold several stages
    assert proc.returncode == 0, proc.stderr
    etc = os.path.join(work, "fleet-out", "devices", "wa", "etc", "edge-agent")
    config = os.path.join(etc, "wa.toml")
    with open(os.path.join(etc, "fleet", "wb.key")) as f:
        wb_key = [line.split('"')[1] for line in f if "public-key" in line][0]
    stale = zmq.curve_keypair()[0].decode()
    with open(config) as f:
        text = f.read()
    assert wb_key in text
    with open(config, "w") as f:
        f.write(text.replace(wb_key, stale))
    # the device paths of the render live under --root: put wa's files there
    device_etc = os.path.join(root, "etc", "edge-agent")
    os.makedirs(os.path.dirname(device_etc), exist_ok=True)
    os.rename(etc, device_etc)
    state = os.path.join(root, "var", "lib", "edge-agent")  # a worker's profile must exist
    os.makedirs(state)
    with open(os.path.join(state, "calibration.json"), "w") as f:
        json.dump({"format": "edge-agent-calibration-profile", "version": 1, "entries": []}, f)
    proc = _cli(work, "run", "--config", os.path.join(device_etc, "wa.toml"))
    assert proc.returncode == 78, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert ("peers[0].public_key (peer 'wb') is %s but allowed_keys_dir holds %s" % (stale, wb_key)
            in errors[0])
    assert os.path.join(device_etc, "fleet", "wb.key") in errors[0]
