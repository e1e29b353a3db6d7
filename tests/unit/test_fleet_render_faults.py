"""`fleet render` and its inventory refuse bad input with one line and leave no half fleet.

A render checks every node, option and the --out folder first, then writes into a new folder
next to --out that replaces it only when everything was written: a rejected node, a bad --rate
or a failed write leaves --out exactly as it was (absent, or the previous render), a re-render
keeps every existing key and leaves no device of the previous topology behind. An inventory
host is an IP address or an RFC 1123 host name without a port, a user a POSIX user name; a
binary or unreadable inventory is one line.
"""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.fleet import render as render_mod
from agent.fleet.inventory import InventoryError, load_inventory, parse_inventory


def _topology(tmp_path, last="w4", name="topo.json", agent=None):
    ids = ["cam1", "w1", "w2", "w3", last]
    obj = {"bundle": "demo", "sources": [{"id": "cam1", "share": 1.0}],
           "workers": [{"id": i, "stage": n + 1} for n, i in enumerate(ids[1:])],
           "links": [{"from": a, "to": b} for a, b in zip(ids, ids[1:])], "agent": agent or {}}
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def _inventory(tmp_path, last="w4", extra="", name="hosts.txt"):
    text = "cam1 10.0.0.10\nw1 10.0.0.11\nw2 10.0.0.12\nw3 10.0.0.13\n%s 10.0.0.14\n%s" % (
        last, extra)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _render(capsys, topo, inv, out, *extra):
    rc = main(["fleet", "render", "--topology", topo, "--inventory", inv, "--out", str(out)]
              + list(extra))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def _tree(path):
    """Every file under ``path`` with its bytes and mode (the exact state of a folder)."""
    found = {}
    for d, _, files in os.walk(str(path)):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                found[os.path.relpath(p, str(path))] = (fh.read(), os.stat(p).st_mode)
    return found


def _leftovers(tmp_path):
    return [n for n in os.listdir(str(tmp_path)) if ".render-" in n or ".old-" in n]


def test_a_node_refused_after_the_topology_checks_writes_nothing(tmp_path, capsys):
    """A value the topology takes but a device's config refuses (agent.metrics_host off
    loopback, with the metrics port the inventory gives every node), found once the keys are
    made: one line naming the field and the node, exit 2, and no keys, devices or manifest on
    disk (no temporary folder left)."""
    out = tmp_path / "out"
    rc, _, err = _render(capsys, _topology(tmp_path, agent={"metrics_host": "0.0.0.0"}),
                         _inventory(tmp_path), out)
    assert rc == 2 and len(err) == 1, err
    assert "agent.metrics_host" in err[0] and "(fleet node cam1)" in err[0]
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_node_id_a_node_config_refuses_is_refused_with_the_topology(tmp_path, capsys):
    """A worker id outside the node config's rule (non-ASCII) is refused as the topology is
    read, naming the file and the field: one line, exit 2, nothing on disk."""
    out = tmp_path / "out"
    rc, _, err = _render(capsys, _topology(tmp_path, "w4\u00e9"),
                         _inventory(tmp_path, "w4\u00e9"), out)
    assert rc == 2 and len(err) == 1 and "topo.json: workers[3].id: must be 1-64" in err[0]
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_refused_render_over_an_existing_fleet_leaves_it_as_it_was(tmp_path, capsys):
    """After a good render, a render with a refused node or --rate nan/inf changes no byte
    and no mode of the existing folder."""
    out = tmp_path / "out"
    assert _render(capsys, _topology(tmp_path), _inventory(tmp_path), out)[0] == 0
    before = _tree(out)
    bad = (_topology(tmp_path, "w4\u00e9", "bad.json"),
           _inventory(tmp_path, "w4\u00e9", name="bad.txt"))
    rc, _, err = _render(capsys, bad[0], bad[1], out)
    assert rc == 2 and len(err) == 1
    for rate in ("nan", "inf", "-1"):
        rc, _, err = _render(capsys, _topology(tmp_path), _inventory(tmp_path), out,
                             "--rate", rate)
        assert rc == 2 and len(err) == 1 and "--rate: must be a number >= 0" in err[0]
    assert _tree(out) == before and _leftovers(tmp_path) == []


def test_rate_nan_on_a_new_folder_writes_nothing(tmp_path, capsys):
    """--rate nan is one line, exit 2, before any key is made."""
    out = tmp_path / "out"
    rc, _, err = _render(capsys, _topology(tmp_path), _inventory(tmp_path), out,
                         "--rate", "nan")
    assert rc == 2 and len(err) == 1 and not out.exists()


def test_a_failed_write_midway_leaves_the_previous_render(tmp_path, capsys, monkeypatch):
    """A write that fails after some devices were written (a full disk, here on the sheets)
    is one line; the previous render is untouched and no temporary folder is left."""
    out = tmp_path / "out"
    assert _render(capsys, _topology(tmp_path), _inventory(tmp_path), out)[0] == 0
    before = _tree(out)

    def full_disk(stage, *args):
        raise OSError(28, "No space left on device", os.path.join(stage, "devices"))

    monkeypatch.setattr(render_mod, "_write_sheets", full_disk)
    rc, _, err = _render(capsys, _topology(tmp_path), _inventory(tmp_path), out, "--emulate")
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0]
    assert _tree(out) == before and _leftovers(tmp_path) == []


def test_a_re_render_keeps_every_key_and_drops_devices_of_removed_nodes(tmp_path, capsys):
    """Rendering a changed topology over a fleet: existing keys kept byte for byte (also the
    removed node's), the new node's made, no device folder of the removed node left."""
    out = tmp_path / "out"
    assert _render(capsys, _topology(tmp_path), _inventory(tmp_path), out)[0] == 0
    keys = {k: v for k, v in _tree(out / "keys").items()}
    rc, text, _ = _render(capsys, _topology(tmp_path, "w4x", "t2.json"),
                          _inventory(tmp_path, "w4x", name="h2.txt"), out)
    assert rc == 0 and "keys: 1 made, 5 kept" in text
    after = _tree(out / "keys")
    assert all(after[k] == v for k, v in keys.items())
    assert sorted(os.listdir(str(out / "devices"))) == ["cam1", "w1", "w2", "w3", "w4x"]
    sheet = (out / "devices" / "w1" / "SHEET.txt").read_text()
    assert str(out) in sheet and ".render-" not in sheet
    assert _leftovers(tmp_path) == []


def test_out_that_is_a_file_or_holds_foreign_files_is_refused(tmp_path, capsys):
    """--out a file, or a folder with files a render does not write (it is replaced as a
    whole): one line, nothing touched."""
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = _render(capsys, _topology(tmp_path), _inventory(tmp_path), f)
    assert rc == 2 and len(err) == 1 and "is a file, not a folder" in err[0]
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    rc, _, err = _render(capsys, _topology(tmp_path), _inventory(tmp_path), d)
    assert rc == 2 and len(err) == 1 and "notes.txt" in err[0]
    assert os.listdir(str(d)) == ["notes.txt"] and f.read_text() == "x"


@pytest.mark.parametrize("line,says", [
    ("a 10.0.0.10:5551", "host '10.0.0.10:5551' has a port"),
    ("a [fe80::1]:5551", "has a port"),
    ("a [::1]", "is in brackets"),
    ("a ;rm", "host ';rm' is neither an IP address nor a host name"),
    ("a $(touch", "is neither an IP address nor a host name"),
    ("a h\u00e9", "is neither an IP address nor a host name"),
    ("a -h", "is neither an IP address nor a host name"),
    ("a 10.0.0.256", "is not an IP address"),
    ("a %s.lan" % ("x" * 64), "is neither an IP address nor a host name"),
    ("a h user=$(touch", "user='$(touch' is not a user name"),
    ("a h user=Root", "is not a user name"),
    ("a h user=a;b", "is not a user name"),
    ("a h user=", "is not a user name"),
    ("a h user=%s" % ("u" * 33), "is not a user name"),
])
def test_inventory_hosts_are_addresses_or_names_without_a_port_and_users_posix_names(
        line, says):
    """A host is an IPv4/IPv6 address or an RFC 1123 host name, no port; a user matches
    [a-z_][a-z0-9_-]*[$]? (at most 32): anything else is one line naming the entry."""
    with pytest.raises(InventoryError) as info:
        parse_inventory(line + "\nb h2\n", ["a", "b"], "inv")
    assert str(info.value).startswith("inv:1: a: ") and says in str(info.value)


def test_inventory_accepts_addresses_names_and_posix_users():
    """IPv4, IPv6 (bracketed in endpoints), dotted host names and users like svc$ pass."""
    hosts = parse_inventory("a 10.0.0.1 user=jetson\nb fe80::1 user=_svc-1$\n"
                            "c jetson-2.lab.example user=j\n", ["a", "b", "c"], "inv")
    assert hosts["b"].endpoint(5551) == "tcp://[fe80::1]:5551"
    assert hosts["c"].endpoint(5552) == "tcp://jetson-2.lab.example:5552"
    assert hosts["b"].user == "_svc-1$"


def test_a_binary_or_unreadable_inventory_is_one_line(tmp_path, capsys):
    """A binary inventory or a folder given as one: exit 2 and one line naming it."""
    inv = tmp_path / "hosts.bin"
    inv.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(InventoryError, match="hosts.bin: not a UTF-8 text file"):
        load_inventory(str(inv), ["a"])
    for path in (inv, tmp_path):
        rc, _, err = _render(capsys, _topology(tmp_path), str(path), tmp_path / "out")
        assert rc == 2 and len(err) == 1 and str(path) in err[0]
    assert not (tmp_path / "out").exists()


def test_the_sheet_quotes_what_the_shell_would_read(tmp_path, capsys):
    """A user name ending in $ and an IPv6 host reach the sheet's scp command shell-quoted,
    the address in brackets (scp's form), as in the manifest's endpoints and metrics URL."""
    out = tmp_path / "out"
    inv = tmp_path / "hosts6.txt"
    inv.write_text("cam1 10.0.0.10\nw1 fd00::11 user=svc$\nw2 10.0.0.12\nw3 10.0.0.13\n"
                   "w4 10.0.0.14\n")
    assert _render(capsys, _topology(tmp_path), str(inv), out)[0] == 0
    sheet = (out / "devices" / "w1" / "SHEET.txt").read_text()
    assert "'svc$@[fd00::11]:edge-agent-files'" in sheet
    man = json.loads((out / "fleet.json").read_text())
    assert man["nodes"]["w1"]["metrics"] == "http://[fd00::11]:9464/metrics"
    assert man["nodes"]["w1"]["control"] == "tcp://[fd00::11]:5551"


def test_a_damaged_fleet_json_is_named_and_a_missing_one_is_none(tmp_path):
    """``load_manifest``: no fleet.json is None (the command says the folder holds none); one
    that is not JSON, or not a render's manifest, is a UsageError naming the file (it used to
    read as missing)."""
    from agent.errors import UsageError
    from agent.fleet.manifest import load_manifest

    assert load_manifest(str(tmp_path)) is None
    path = tmp_path / "fleet.json"
    for text, message in (("garbage{", "not valid JSON"), ("[1, 2]", "not a fleet.json made")):
        path.write_text(text)
        with pytest.raises(UsageError, match=message):
            load_manifest(str(tmp_path))
    path.write_text('{"nodes": {}}')
    assert load_manifest(str(path)) == {"nodes": {}}


@pytest.mark.parametrize("bundle", ["relbundle", "opt/edge-agent/bundle", "~/bundle", ""])
def test_a_bundle_path_that_is_not_absolute_is_refused(tmp_path, capsys, bundle):
    """Rule: --bundle is the bundle's path on the devices, so it must be absolute: a relative
    one (it was written into every config taken from the devices' "/", e.g.
    ``bundle = "/relbundle"``) is one line naming it, exit 2, and nothing is written."""
    out = tmp_path / "out"
    rc, _, err = _render(capsys, _topology(tmp_path), _inventory(tmp_path), out,
                         "--bundle", bundle)
    assert rc == 2 and err == ["edge-agent fleet render: error: --bundle: the bundle's path on the "
                               "devices must be absolute, got %r" % bundle], err
    assert not out.exists() and _leftovers(tmp_path) == []


def _with_replay(tmp_path, replay):
    """The test topology with ``agent.replay_path`` set to ``replay``."""
    path = _topology(tmp_path)
    obj = json.loads(open(path).read())
    obj["agent"] = {"replay_path": replay}
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_a_sources_replay_set_is_copied_into_its_files_at_a_device_path(tmp_path, capsys):
    """Rule: the topology's replay set (agent.replay_path, a workstation file) is copied into
    the source's files (mode 0644, for the service user), its config names it where those
    files go on the device (beside the config, under --root), its sheet says so; a worker's
    config names no replay set (it reads none). A device's ``run`` found no file at the
    workstation's path before."""
    import numpy as np

    from agent.config.node import load_config

    replay = tmp_path / "data" / "replay.npz"
    replay.parent.mkdir()
    np.savez(str(replay), x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4))
    out, root = tmp_path / "out", tmp_path / "root"
    rc, _, err = _render(capsys, _with_replay(tmp_path, str(replay)), _inventory(tmp_path), out,
                         "--root", str(root))
    assert rc == 0, err
    etc = out / "devices" / "cam1" / "etc" / "edge-agent"
    cfg = load_config(str(etc / "cam1.toml"))
    assert cfg.replay_path == str(root / "etc" / "edge-agent" / "replay.npz")
    assert (etc / "replay.npz").read_bytes() == replay.read_bytes()
    assert oct(os.stat(str(etc / "replay.npz")).st_mode & 0o777) == "0o644"
    sheet = (out / "devices" / "cam1" / "SHEET.txt").read_text()
    assert "replay set (a copy of %s), now %s" % (replay, cfg.replay_path) in sheet
    assert sheet.index("cp -r edge-agent-files/.") < sheet.index("replay set")
    w1 = out / "devices" / "w1" / "etc" / "edge-agent"
    assert load_config(str(w1 / "w1.toml")).replay_path == ""
    assert not (w1 / "replay.npz").exists()
    assert "replay set" not in (out / "devices" / "w1" / "SHEET.txt").read_text()


def test_a_replay_set_that_is_not_there_is_refused_before_anything_is_written(tmp_path,
                                                                              capsys):
    """Rule: a topology whose agent.replay_path names no regular file is one line naming the
    field and the path, exit 2, and --out is not written (the sheet would say to copy a file
    that is not there)."""
    out = tmp_path / "out"
    missing = str(tmp_path / "none.npz")
    rc, _, err = _render(capsys, _with_replay(tmp_path, missing), _inventory(tmp_path), out)
    assert rc == 2 and len(err) == 1, err
    assert "agent.replay_path: %s: No such file" % missing in err[0], err
    assert not out.exists() and _leftovers(tmp_path) == []
