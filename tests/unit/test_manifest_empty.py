"""A fleet manifest with no node (``{"nodes": {}}``: an edit or a broken render) is refused
by the commands that read a fleet, with one line naming the file and the fix, exit 2: a
`status` of no node printed an empty table and exit 0, a fleet "all fine". Real CLI
subprocesses and files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from agent.errors import UsageError
from agent.fleet.manifest import require_manifest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "agent"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)


@pytest.fixture
def empty_fleet(tmp_path):
    (tmp_path / "fleet.json").write_text('{"nodes": {}}')
    return tmp_path


@pytest.mark.parametrize("as_file", [False, True])
def test_status_refuses_a_manifest_without_nodes(empty_fleet, as_file):
    """Rule: ``status --fleet`` of a manifest whose ``nodes`` is empty (given as its folder or
    as the file) is one line naming the file and the fix, exit 2, and no table."""
    manifest = empty_fleet / "fleet.json"
    proc = _cli("status", "--fleet", str(manifest if as_file else empty_fleet))
    err = proc.stderr.decode()
    assert proc.returncode == 2, (proc.returncode, err)
    assert proc.stdout == b""
    assert len(err.strip().splitlines()) == 1, err
    assert str(manifest) in err and '"nodes" is empty' in err and "fleet render" in err


def test_submit_refuses_a_manifest_without_nodes(empty_fleet, tmp_path):
    """Rule: ``submit --fleet`` reads the manifest the same way: no node is the same line."""
    images = tmp_path / "images.npy"
    np.save(str(images), np.zeros((1, 3, 8, 8), dtype=np.float32))
    proc = _cli("submit", "--fleet", str(empty_fleet), "--source", "cam", "--images",
                str(images))
    err = proc.stderr.decode()
    assert proc.returncode == 2, (proc.returncode, err)
    assert '"nodes" is empty' in err


def test_a_manifest_with_nodes_is_read(tmp_path):
    """Rule: a manifest with a node is read as it is."""
    man = {"nodes": {"w1": {"metrics": "http://127.0.0.1:9464/metrics", "stage": 1}}}
    (tmp_path / "fleet.json").write_text(json.dumps(man))
    assert require_manifest(str(tmp_path)) == man
    (tmp_path / "fleet.json").write_text('{"nodes": {}}')
    with pytest.raises(UsageError, match="is empty"):
        require_manifest(str(tmp_path))
