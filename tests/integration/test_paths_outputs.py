"""Output folders the commands cannot use are refused in one line before anything runs, never
with a traceback part-way: ``testbed --out`` and ``--json`` on a read-only file system, a
run folder (``submit --out`` makes it as the testbed does) that cannot be made, a ``--out``
whose name is not UTF-8 (every agent's config names it) and a topology ``bundle`` or
``agent`` path in such a folder, and ``fleet render --out`` at a mount point (a render
replaces its folder as a whole, which a mount point cannot be).

The read-only file system and the mount point are real tmpfs mounts (root only: skipped
with the reason otherwise), undone at the end of each test.
"""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.rundir import new_run_dir
from agent.testbed.topology import TopologyError, load_topology
from engines.demo import DEMO_BUNDLE_DIR
from tests.integration.tmpfs import tmpfs

NON_UTF8 = os.fsdecode(b"caf\xe9 out")  # a Latin-1 name, as Python holds it (surrogateescape)


def _topology(folder, **over):
    """A one-source, four-worker topology of the demo bundle in ``folder/topo.json``."""
    ids = ["cam1", "w1", "w2", "w3", "w4"]
    obj = {"bundle": "demo", "warmup_s": 0.5, "sources": [{"id": "cam1", "share": 1.0}],
           "workers": [{"id": w, "stage": i + 1, "emulate_capacity_flops": 1e8}
                       for i, w in enumerate(ids[1:])],
           "links": [{"from": a, "to": b} for a, b in zip(ids, ids[1:])]}
    obj.update(over)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "topo.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    return path


def _testbed(capsys, topo, *args):
    rc = main(["testbed", "--topology", topo, "--policies", "cf", "--rates", "5",
               "--duration", "1", "--no-plots"] + list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_testbed_out_on_a_read_only_file_system_is_one_line_before_any_run(tmp_path, capsys):
    """Rule: --out on a read-only file system (the folder itself, or one to be made in it) is
    exit 2 with one line naming --out and the reason; nothing is made, no agent started."""
    topo = _topology(str(tmp_path))
    with tmpfs(str(tmp_path / "ro"), 1 << 20, read_only=True) as ro:
        for out in (ro, os.path.join(ro, "runs")):
            rc, err = _testbed(capsys, topo, "--out", out)
            assert rc == 2 and len(err) == 1, err
            assert err[0].startswith("edge-agent testbed: error: --out: cannot ") and \
                "Read-only file system" in err[0] and ro in err[0], err
        assert os.listdir(ro) == []


def test_testbed_json_in_a_read_only_folder_is_refused_before_the_first_run(tmp_path,
                                                                            capsys):
    """Rule: --json in a folder that takes no new file is refused with the --out checks,
    before any (policy, rate) runs: no run folder is made under --out."""
    topo = _topology(str(tmp_path))
    out = tmp_path / "runs"
    with tmpfs(str(tmp_path / "ro"), 1 << 20, read_only=True) as ro:
        rc, err = _testbed(capsys, topo, "--out", str(out), "--json",
                           os.path.join(ro, "r.json"))
    assert rc == 2 and len(err) == 1, err
    assert "--json: cannot write in %s: Read-only file system" % ro in err[0]
    assert not out.exists()


def test_a_run_folder_that_cannot_be_made_is_one_usage_error(tmp_path):
    """Rule: ``new_run_dir`` (testbed's and submit's --out) in a folder of a read-only file
    system raises one UsageError naming --out and the reason, not an OSError."""
    with tmpfs(str(tmp_path / "ro"), 1 << 20, read_only=True) as ro:
        with pytest.raises(UsageError) as exc:
            new_run_dir(ro)
    assert str(exc.value) == "--out: cannot make a run folder in %s: Read-only file system" % ro


def test_a_testbed_out_whose_name_is_not_utf8_is_refused_naming_the_byte(tmp_path, capsys):
    """Rule: --out with a name that is not UTF-8 is exit 2 with one line naming --out, the
    path (the byte written \\xNN) and the byte; nothing is made."""
    topo = _topology(str(tmp_path))
    out = os.path.join(str(tmp_path), NON_UTF8)
    rc, err = _testbed(capsys, topo, "--out", out)
    assert rc == 2 and len(err) == 1, err
    assert err[0] == ("edge-agent testbed: error: --out: %s/caf\\xe9 out is not a UTF-8 name "
                      "(byte 0xe9): the node configs that name it are UTF-8 text; rename it "
                      "or give another path" % tmp_path)
    assert not os.path.lexists(out)


def test_topology_paths_that_are_not_utf8_are_refused_naming_the_file_and_field(tmp_path):
    """Rule: a topology whose bundle or agent.replay_path resolves to a name that is not
    UTF-8 is refused when read, naming the file and the field; one in a folder with such a
    name that uses the demo bundle is read."""
    folder = os.path.join(str(tmp_path), NON_UTF8)
    os.makedirs(folder)
    os.symlink(DEMO_BUNDLE_DIR, os.path.join(folder, "bundle"))
    path = _topology(folder, bundle="bundle")
    with pytest.raises(TopologyError) as exc:
        load_topology(path)
    assert str(exc.value).startswith(path + ": bundle: ") and "byte 0xe9" in str(exc.value)
    path = _topology(folder, agent={"replay_path": "replay.npz"})
    with pytest.raises(TopologyError) as exc:
        load_topology(path)
    assert str(exc.value).startswith(path + ": agent.replay_path: ")
    assert load_topology(_topology(folder)).bundle == "demo"


def test_fleet_render_out_at_a_mount_point_is_refused_and_a_folder_inside_works(tmp_path,
                                                                               capsys):
    """Rule: fleet render --out naming a mount point is exit 2 with one line naming it and a
    folder inside it to give instead; that folder renders (exit 0)."""
    topo = _topology(str(tmp_path))
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam1 10.0.0.1\nw1 10.0.0.2\nw2 10.0.0.3\nw3 10.0.0.4\nw4 10.0.0.5\n")
    with tmpfs(str(tmp_path / "mnt"), 4 << 20) as mnt:
        rc = main(["fleet", "render", "--topology", topo, "--inventory", str(inv),
                   "--out", mnt, "--root", str(tmp_path / "root")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err == [
            "edge-agent fleet render: error: --out: %s is a mount point, which a render cannot "
            "replace as a whole; give a folder inside it, e.g. %s/fleet" % (mnt, mnt)]
        assert os.listdir(mnt) == []
        assert main(["fleet", "render", "--topology", topo, "--inventory", str(inv),
                     "--out", os.path.join(mnt, "fleet"), "--root",
                     str(tmp_path / "root")]) == 0
        assert sorted(os.listdir(os.path.join(mnt, "fleet"))) == [
            "devices", "fleet.json", "keys", "testbed.json"]
