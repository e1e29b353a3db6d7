"""A CURVE key pasted into a testbed topology's ``agent`` table where a key file's path belongs
(``secret_key_path``, ``public_key_path``) is refused when the topology is read, before any
agent starts, in the words a node config uses and naming the topology's field; the key is never
shown, not even in part where its "/"s would fold as a path's ("//", "/./", "/../", a final
"/"). Key file paths, relative or absolute, are read as before. Real files in tmp_path."""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.net.keyfile_create import generate_keypair
from agent.testbed.topology import TopologyError, load_topology, parse_topology

# 40 z85 characters each: keys as they could be pasted, each with a pattern a path folds
FOLDING_KEYS = {
    "double-slash": "0123456789abcdefghij//klmnopqrstuvwxyzAB",
    "dot": "0123456789abcdefghij/./lmnopqrstuvwxyzAB",
    "dot-dot": "0123456789abcdefghi/../klmnopqrstuvwxyzA",
    "trailing-slash": "0123456789abcdefghijklmnopqrstuvwxyzABC/",
    "no-slash": "0123456789abcdefghijklmnopqrstuvwxyzABCD",
}
WORDS = {"secret_key_path": "looks like an inline key (40 z85 characters), not a file: give "
                            "the path of NAME.key_secret (value not shown)",
         "public_key_path": "like an inline key (value not shown); give the path of an "
                            "existing NAME.key file"}


def write_topology(folder, agent) -> str:
    """``folder/topo.json``: the demo bundle on one source and a chain of four one-stage
    workers, ``agent`` as its agent table."""
    ids = ["cam", "w1", "w2", "w3", "w4"]
    path = os.path.join(str(folder), "topo.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"bundle": "demo", "agent": agent, "sources": [{"id": "cam", "share": 1.0}],
                   "workers": [{"id": w, "stage": i + 1} for i, w in enumerate(ids[1:])],
                   "links": [{"from": a, "to": b} for a, b in zip(ids, ids[1:])]}, f)
    return path


def assert_not_shown(key: str, text: str) -> None:
    """No run of 5 or more of the key's characters between its "/"s is in ``text``."""
    assert len(key) == 40
    assert not any(part in text for part in key.split("/") if len(part) > 4), text


@pytest.mark.parametrize("field", sorted(WORDS))
@pytest.mark.parametrize("key", list(FOLDING_KEYS.values()), ids=list(FOLDING_KEYS))
def test_a_key_in_the_agent_tables_key_path_is_refused_when_read_never_shown(tmp_path, key,
                                                                            field):
    """Rule: parsing a topology whose agent.secret_key_path or agent.public_key_path is a
    40-character z85 key (one a path would fold included) raises naming the file and the field
    in the node config's words, and no part of the key is in the message."""
    path = write_topology(tmp_path, {field: key})
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    text = str(err.value)
    assert text.startswith("%s: agent.%s: " % (path, field)), text
    assert WORDS[field] in text, text
    assert_not_shown(key, text)


@pytest.mark.parametrize("key", list(FOLDING_KEYS.values()), ids=list(FOLDING_KEYS))
def test_the_testbed_command_refuses_the_key_before_any_agent_starts(tmp_path, capsys, key):
    """Rule: `testbed --topology FILE` with a key in agent.secret_key_path exits 2 with one
    line naming the field, makes no run folder (no agent started, no config written) and
    shows no part of the key on stdout or stderr."""
    path = write_topology(tmp_path, {"security": "curve", "secret_key_path": key})
    out = tmp_path / "runs"
    rc = main(["testbed", "--topology", path, "--out", str(out), "--rates", "1",
               "--duration", "1"])
    cap = capsys.readouterr()
    assert rc == 2, cap.err
    assert ": agent.secret_key_path: the value " + WORDS["secret_key_path"] in cap.err, cap.err
    assert_not_shown(key, cap.out + cap.err)
    assert not out.exists()


def test_key_file_paths_are_read_as_before(tmp_path):
    """Rule: relative and absolute key file paths in the agent table are accepted and made
    absolute from the topology's folder, as before; a key file whose name is 40 z85
    characters (NAME.key) is a file, not an inline key."""
    os.chmod(str(tmp_path), 0o700)
    keys = tmp_path / "keys"
    keys.mkdir()
    generate_keypair(str(keys), "n")
    odd = "k" * 36 + ".key"  # 40 z85 characters, and a file
    (keys / odd).write_bytes((keys / "n.key").read_bytes())
    topo = load_topology(write_topology(tmp_path, {
        "secret_key_path": "keys/../keys/n.key_secret", "public_key_path": str(keys / "n.key")}))
    assert topo.agent["secret_key_path"] == str(keys / "n.key_secret")
    assert topo.agent["public_key_path"] == str(keys / "n.key")
    topo = load_topology(write_topology(keys, {"public_key_path": odd}))
    assert os.path.samefile(topo.agent["public_key_path"], str(keys / odd))


def test_a_runs_copy_is_read_as_it_ran(tmp_path):
    """Rule: a run folder's copy of its topology (read with strict False, as `report` reads
    it) is not refused for a key in agent.secret_key_path: that run has already been made."""
    key = FOLDING_KEYS["no-slash"]
    with open(write_topology(tmp_path, {"secret_key_path": key}), encoding="utf-8") as f:
        obj = json.load(f)
    topo = parse_topology(obj, str(tmp_path), "topology.json", strict=False)
    assert topo.agent["secret_key_path"] == os.path.join(str(tmp_path), key)
