"""uint8 images for a float model, against real agents: a CURVE fleet (a client-mode source and
two workers on the tiny two-stage bundle, whose stage 1 takes float32, the fixed policy)
replaying a set of uint8 images, which the source scales to [0, 1]. ``edge-agent submit`` and
``agent.fleet.client`` send the same images from an ``.npy`` as uint8, and the source scales
them as it scales its replay set (``engines.profile.as_input``): no input refused for it, one
INFO line in its log; every other dtype is sent as it is and refused as before."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from agent import cli
from agent.net.keyfiles import load_secret_key_file
from agent.net.keyfile_create import generate_keypair
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

ROWS = 12  # inputs per file: a few answers of each exit, quick on a loaded machine


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A dict: ``endpoint``, ``keys`` (submit's --key/--server-key), ``folder`` (a render's
    folder: fleet.json, testbed.json naming the bundle, the keys), ``npy`` (uint8 images, the
    rows of the source's replay set), ``cluster``."""
    root = str(tmp_path_factory.mktemp("submit-scaling"))
    bundle = build_two_stage_bundle(os.path.join(root, "tiny"))
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(64, 1, 8, 8)).astype(np.uint8)
    replay = os.path.join(root, "replay-uint8.npz")
    np.savez(replay, x=x, y=rng.integers(0, 3, size=64).astype(np.int64))
    npy = os.path.join(root, "images.npy")
    np.save(npy, x[:ROWS])
    folder = os.path.join(root, "fleet")
    keydir = os.path.join(folder, "keys")
    nodes = {"s1": 0, "w1": 1, "w2": 2}
    public = {n: load_secret_key_file(generate_keypair(keydir, n)[1])[0].decode()
              for n in nodes}
    generate_keypair(os.path.join(keydir, "clients"), "workstation")
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    c = Cluster(os.path.join(root, "agents"), bundle, nodes, policy="fixed",
                thresholds=(0.6, 1.0))

    def secure(node):
        peers = tuple(dataclasses.replace(p, public_key=public[p.id])
                      for p in c.config(node).peers)
        return dict(security="curve", peers=peers, allowed_keys_dir=keydir,
                    secret_key_path=os.path.join(keydir, node + ".key_secret"),
                    public_key_path=os.path.join(keydir, node + ".key"))

    with open(os.path.join(folder, "fleet.json"), "w") as f:
        json.dump({"nodes": {"s1": {"client": endpoint, "role": "source", "stage": 0}}}, f)
    with open(os.path.join(folder, "testbed.json"), "w") as f:
        json.dump({"bundle": bundle}, f)
    try:
        c.start("w2", **secure("w2"))
        c.start("w1", **secure("w1"))
        c.start("s1", arrival="client", client_bind=endpoint, replay_path=replay,
                client_keys_dir=os.path.join(keydir, "clients"), **secure("s1"))
        c.wait_for(lambda: c.alive_at("s1", ["w1"]), 60, "source to hear w1")
        yield {"endpoint": endpoint, "folder": folder, "npy": npy, "cluster": c,
               "keys": ["--key", os.path.join(keydir, "clients", "workstation.key_secret"),
                        "--server-key", os.path.join(keydir, "s1.key")]}
    finally:
        c.stop_all()


def _counts(c):
    """(tasks the source completed, client inputs it refused for their dtype or shape, for
    their values), from its stats.json."""
    s = c.stats("s1") or {}
    counters = s.get("counters", {})
    return (s.get("tasks", {}).get("completed", 0), counters.get("drop_bad_shape", 0),
            counters.get("drop_bad_input", 0))


def _after(c, before, completed):
    """The source's counts once it has completed ``completed`` more tasks than ``before``."""
    c.wait_for(lambda: _counts(c)[0] >= before[0] + completed, 60, "the source's stats")
    return _counts(c)


def _rows(out):
    """id -> (outcome, reason, class, confidence, exit) of each answer row."""
    return {r.split()[0]: tuple(r.split()[1:6]) for r in out.splitlines()[1:]
            if r.startswith("submit-")}


def _submit_pair(fleet, tmp_path, capsys, extra):
    """``submit`` of the uint8 .npy, then of the same images saved as float32 x / 255, both with
    ``extra`` options: (stdout of each run, stderr of the uint8 one, the source's counts before
    and after the uint8 run)."""
    c = fleet["cluster"]
    before = _counts(c)
    assert cli.main(["submit", "--images", fleet["npy"], "--timeout", "30"] + extra) == 0
    out, err = capsys.readouterr()
    after = _after(c, before, ROWS)
    floats = str(tmp_path / "floats.npy")
    np.save(floats, np.load(fleet["npy"]).astype(np.float32) / np.float32(255.0))
    assert cli.main(["submit", "--images", floats, "--timeout", "30"] + extra) == 0
    return out, capsys.readouterr().out, err, before, after


@pytest.mark.parametrize("how", ["endpoint", "endpoint-rate", "fleet", "fleet-rate"])
def test_a_uint8_file_is_sent_as_it_is_and_the_source_scales_it_refusing_none(
        fleet, tmp_path, capsys, how):
    """Rule: uint8 images submitted to a float32 stage 1 (from an .npy, by --endpoint and keys
    or by --fleet, one at a time or at --rate) go as uint8 and the source scales them as it
    scales its replay set: every input completes with the class, confidence and exit of the
    same images given as float32 x / 255, nothing is said on stderr, and the source counts no
    refusal (drop_bad_shape and drop_bad_input stay as they were)."""
    target = (["--fleet", fleet["folder"], "--source", "s1"] if how.startswith("fleet") else
              ["--endpoint", fleet["endpoint"]] + fleet["keys"])
    rate = ["--rate", "40"] if how.endswith("rate") else []
    uint8_out, floats_out, err, before, after = _submit_pair(fleet, tmp_path, capsys,
                                                             target + rate)
    assert err == "", err
    summary = [r for r in uint8_out.splitlines() if r.startswith("%d sent" % ROWS)]
    assert summary == ["%d sent: %d completed" % (ROWS, ROWS)], uint8_out
    assert after[1:] == before[1:], (before, after)
    scaled = _rows(uint8_out)
    assert len(scaled) == ROWS and {v[0] for v in scaled.values()} == {"completed"}, uint8_out
    assert scaled == _rows(floats_out), (uint8_out, floats_out)  # the same ids and answers


def test_a_uint8_input_is_checked_at_its_uint8_size_the_size_it_is_sent_at(
        fleet, tmp_path, capsys):
    """Rule: submit's size check (--max-message-bytes) weighs an input as it goes on the wire:
    at a limit between the uint8 message and the float32 one, the uint8 file is sent and
    completes, and the same images as float32 are refused before anything is sent (exit 2)."""
    from agent.fleet.client_wire import task_frames
    from agent.protocol import wire

    x = np.load(fleet["npy"])
    floats = str(tmp_path / "floats.npy")
    np.save(floats, x.astype(np.float32) / np.float32(255.0))
    last = "submit-%d-3" % os.getpid()  # the id of the third input, the run's longest
    limit = wire.frames_nbytes(task_frames(x[:1], last, "submit"))  # the uint8 message's size
    assert wire.frames_nbytes(task_frames(x[:1].astype(np.float32), last, "submit")) > limit
    argv = ["--endpoint", fleet["endpoint"], "--timeout", "30", "--count", "3",
            "--max-message-bytes", str(limit)] + fleet["keys"]
    assert cli.main(["submit", "--images", fleet["npy"]] + argv) == 0
    out, err = capsys.readouterr()
    assert err == "" and "3 sent: 3 completed" in out.splitlines(), (out, err)
    assert cli.main(["submit", "--images", floats] + argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "above the source's max_message_bytes %d (given)" % limit in err, err
    assert err.rstrip().endswith("3 input(s) not sent"), err


def test_the_client_api_gets_uint8_tensors_scaled_at_the_source_with_one_log_line(fleet):
    """Rule: a source takes uint8 tensors of stage 1's shape from any client of its endpoint
    (``agent.fleet.client.Client``, not only submit) for its float32 stage 1: each of 30 is
    answered completed with the answer its float32 x / 255 gets, no refusal is counted, and
    the source's log says it scales them in one INFO line however many come."""
    from agent.fleet.client import Client, ClientKeys

    c = fleet["cluster"]
    keys = ClientKeys.load(fleet["keys"][1], fleet["keys"][3])
    x = np.load(fleet["npy"])
    before = _counts(c)
    answers = []
    with Client(fleet["endpoint"], keys, timeout_s=30) as client:
        assert client.check_connection(10.0) == ""
        for i in range(30):
            row = x[i % len(x)][None, ...]
            scaled, floats = client.infer(row), client.infer(
                row.astype(np.float32) / np.float32(255.0))
            answers.append((scaled, floats))
    for scaled, floats in answers:
        assert scaled.outcome == "completed", scaled
        assert (scaled.cls, scaled.confidence, scaled.exit_stage) == (
            floats.cls, floats.confidence, floats.exit_stage), (scaled, floats)
    assert _after(c, before, 60)[1:] == before[1:], (before, _counts(c))
    with open(c.logs["s1"], errors="replace") as f:
        lines = [line for line in f if "client inputs in uint8 are scaled" in line]
    assert len(lines) == 1 and " INFO agent.node.source: client inputs in uint8 are scaled " \
        "to [0, 1] as float32 for stage 1 (x / 255)" in lines[0], lines


def test_float_images_left_at_0_255_are_not_scaled_and_the_source_refuses_each(
        fleet, tmp_path, capsys):
    """Rule: only uint8 is scaled: float32 images holding 0-255 are sent as they are, each
    refused by the source (bad_input, values far outside its replay set's, with its x / 255
    hint), nothing on stderr, exit 1."""
    images = str(tmp_path / "float-0-255.npy")
    np.save(images, np.load(fleet["npy"])[:3].astype(np.float32))
    c = fleet["cluster"]
    before = _counts(c)
    assert cli.main(["submit", "--images", images, "--endpoint", fleet["endpoint"],
                     "--timeout", "30"] + fleet["keys"]) == 1
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines()[-1] == "3 sent: 3 error", (out, err)
    assert {v[:2] for v in _rows(out).values()} == {("error", "bad_input")}, out
    assert "(images stored as 0-255? x / 255)" in out, out
    c.wait_for(lambda: _counts(c)[2] >= before[2] + 3, 60, "the source's stats")


def test_another_integer_dtype_is_sent_as_it_is_and_its_refusal_stops_the_run(
        fleet, tmp_path, capsys):
    """Rule: an int64 file of 0-255 images is neither cast nor scaled: the source refuses the
    first input's dtype and the run stops with the one line saying what the file holds and
    what stage 1 takes, exit 2."""
    images = str(tmp_path / "int64.npy")
    np.save(images, np.load(fleet["npy"]).astype(np.int64))
    assert cli.main(["submit", "--images", images, "--endpoint", fleet["endpoint"],
                     "--timeout", "30"] + fleet["keys"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "edge-agent submit: error: --images: %s: inputs int64 (1, 8, 8) each, stage 1 takes "
        "float32 (1, 8, 8) each; %d input(s) not sent" % (images, ROWS - 1)], err
