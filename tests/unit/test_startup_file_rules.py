"""Start-up file rules of a node (``agent.node.preflight``) on real files: what is a start-up
fault (exit 78 with one line naming the field, the path and the fix) and what is left to the
serving side, which warns and goes on.

- ``records.jsonl.1`` is one of the rotated files: a folder or FIFO there is a rotation fault
  while serving (warned, the lines written on to the same file), as at ``.2`` .. ``.N``; the
  current ``records.jsonl`` and its journal stay start-up faults.
- The calibration profile a worker's config names is read and checked whether or not the
  worker emulates its capacity: a rehearsal with emulation refuses the file a real run would.
- A ``state_dir`` below a file names that file and the fix.
- A missing ``allowed_keys_dir`` is named as a missing folder, with where its keys come from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import pytest

from agent.net.security import SecurityError, generate_keypair, load_allowed_keys
from agent.node.preflight import preflight
from agent.node.records import RecordWriter
from agent.ops.files import FileFault, check_writable_dir
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

RANDOM_BYTES = bytes(range(256)) * 4
EMPTY_PROFILE = {"format": "edge-agent-calibration-profile", "version": 1, "entries": []}


def _configs(run_dir):
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": "w%d" % h, "stage": h} for h in range(1, 5)],
        "links": [{"from": a, "to": b} for a, b in
                  zip(["s1", "w1", "w2", "w3"], ["w1", "w2", "w3", "w4"])]})
    return node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0, str(run_dir))


def test_a_folder_or_fifo_at_records_jsonl_1_is_no_start_up_fault_but_the_current_file_is(
        tmp_path):
    """Rule: with rotation on, a non-file at records.jsonl.1 is accepted at start-up (as at
    .2 .. .N); a folder at records.jsonl itself is still refused, naming state_dir and it."""
    cfg = dataclasses.replace(_configs(tmp_path)["s1"], records_max_bytes=2000)
    os.makedirs(os.path.join(cfg.state_dir, "records.jsonl.1"))
    preflight(cfg)
    os.rmdir(os.path.join(cfg.state_dir, "records.jsonl.1"))
    os.mkfifo(os.path.join(cfg.state_dir, "records.jsonl.1"))
    preflight(cfg)
    os.makedirs(os.path.join(cfg.state_dir, "records.jsonl"))
    with pytest.raises(FileFault) as exc:
        preflight(cfg)
    assert str(exc.value).startswith("state_dir: %s is a directory"
                                     % os.path.join(cfg.state_dir, "records.jsonl"))


def test_a_folder_at_records_jsonl_1_leaves_every_line_in_the_current_file(tmp_path, caplog):
    """Rule: while serving, a rotation that finds a folder at records.jsonl.1 warns (with the
    fix) and writes on to the same records.jsonl; the folder is left as it was."""
    path = str(tmp_path / "records.jsonl")
    os.makedirs(path + ".1")
    w = RecordWriter(path, max_bytes=300, keep_files=3)
    with caplog.at_level(logging.WARNING, logger="agent.run"):
        for i in range(20):
            w.opened("t%d" % i, 1.0, 1.0, -1)
            w.write({"id": "t%d" % i, "status": "completed", "pad": "x" * 40})
            assert w.flush()
    w.close()
    with open(path) as f:
        ids = [json.loads(line)["id"] for line in f]
    assert ids == ["t%d" % i for i in range(20)] and w.rotations == 0
    assert os.path.isdir(path + ".1") and os.listdir(path + ".1") == []
    told = [r.getMessage() for r in caplog.records if "rotation" in r.getMessage()]
    assert told and "records.jsonl.1 is not a file: move it away (writing on to the same " \
                    "file)" in told[0]


@pytest.mark.parametrize("emulated", [True, False])
def test_a_corrupt_calibration_profile_is_refused_with_or_without_emulation(tmp_path, emulated):
    """Rule: a worker's capacity_profile of bad JSON or random bytes is a start-up fault naming
    capacity_profile, the file, what is wrong and the fix, also where the worker emulates its
    capacity (no entry of it is used, but a real run would refuse it); a valid profile with no
    entry for this device passes."""
    flops = 2e7 if emulated else 0.0
    base = _configs(tmp_path)["w1"]
    for name, data in (("bad.json", b'{"entries": ['), ("random.json", RANDOM_BYTES)):
        profile = tmp_path / name
        profile.write_bytes(data)
        cfg = dataclasses.replace(base, capacity_profile=str(profile),
                                  emulate_capacity_flops=flops)
        with pytest.raises(FileFault) as exc:
            preflight(cfg)
        line = str(exc.value)
        assert line.startswith("capacity_profile: %s: not valid JSON" % profile), line
        assert line.endswith("; move it away, then calibrate this device (`edge-agent doctor "
                             "--config CONFIG` then prints the command)"), line
        assert "\n" not in line
    good = tmp_path / "calibration.json"
    good.write_text(json.dumps(EMPTY_PROFILE))
    preflight(dataclasses.replace(base, capacity_profile=str(good),
                                  emulate_capacity_flops=flops))


def test_a_state_dir_below_a_file_names_the_file_and_the_fix(tmp_path):
    """Rule: a state_dir whose parent is a file says which file and what to do, whether the
    check may create folders (run) or not (doctor)."""
    plain = tmp_path / "plain"
    plain.write_text("")
    target = str(plain / "state")
    for create in (True, False):
        with pytest.raises(FileFault) as exc:
            check_writable_dir(target, "state_dir", create)
        assert str(exc.value) == ("state_dir: %s: Not a directory (a parent, %s, is a file: "
                                  "move it or point state_dir elsewhere)" % (target, plain))


def test_a_missing_allowed_keys_folder_is_named_as_a_folder_with_where_its_keys_come_from(
        tmp_path):
    """Rule: an allow-list entry that is missing and reads as neither a key nor a key file is
    a missing folder: the error says so and where the NAME.key files come from; a missing
    NAME.key file and a key of the wrong length keep their own errors."""
    missing = str(tmp_path / "nokeys")
    with pytest.raises(SecurityError) as exc:
        load_allowed_keys(missing)
    assert str(exc.value) == ("no folder %s: copy the public keys it allows there (NAME.key "
                              "files: a render's fleet/ folder; clients/ for client_keys_dir)"
                              % missing)
    with pytest.raises(SecurityError, match="no key file .*gone.key"):
        load_allowed_keys(str(tmp_path / "gone.key"))
    public, _ = generate_keypair(str(tmp_path / "keys"), "w1")
    with open(public) as f:
        key = [line.split('"')[1] for line in f if "public-key" in line][0]
    with pytest.raises(SecurityError, match="is 39 characters long"):
        load_allowed_keys(key[:-1])
    assert load_allowed_keys(key) == [key.encode("ascii")]
