"""``edge-agent submit`` of uint8 images to a float model, against real agents: a CURVE fleet
(a client-mode source and two workers on the tiny two-stage bundle, whose stage 1 takes
float32, the fixed policy) replaying a set of uint8 images, which the source scales to [0, 1].
The same images in an ``.npy`` are scaled by ``submit`` as the source scales its replay set
(``engines.profile.as_input``), said in one note, with at most one input refused for it;
every other dtype is sent as it is and refused as before."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from agent import cli
from agent.net.keyfiles import generate_keypair, load_secret_key_file
from agent.testbed.procs import free_ports
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


def _note(images, whose):
    """submit's note for ``images`` scaled, stage 1's dtype known from ``whose``."""
    return ("edge-agent submit: note: --images: %s: %d uint8 input(s) scaled to [0, 1] as "
            "float32 (x / 255), the dtype stage 1 takes (%s)" % (images, ROWS, whose))


REFUSED = "per the source's refusal of the first input, now sent again"


def test_a_uint8_file_for_a_float_model_is_scaled_as_the_source_scales_its_replay_set(
        fleet, tmp_path, capsys):
    """Rule: the uint8 images a source replays, submitted from an .npy to its float32 stage 1,
    are scaled to [0, 1] as the source scales them: every input completes with the class,
    confidence and exit of the same images given as float32 x / 255, one note on stderr says
    how many uint8 inputs were scaled, and the source refused one input for it (the first)."""
    c = fleet["cluster"]
    before = _counts(c)
    argv = ["--endpoint", fleet["endpoint"], "--timeout", "30"] + fleet["keys"]
    assert cli.main(["submit", "--images", fleet["npy"]] + argv) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [_note(fleet["npy"], REFUSED)], err
    assert out.splitlines()[-2] == "%d sent: %d completed" % (ROWS, ROWS), out
    scaled = _rows(out)
    after = _after(c, before, ROWS)
    assert after[1:] == (before[1] + 1, before[2]), (before, after)
    floats = str(tmp_path / "floats.npy")
    np.save(floats, np.load(fleet["npy"]).astype(np.float32) / np.float32(255.0))
    assert cli.main(["submit", "--images", floats] + argv) == 0
    out, err = capsys.readouterr()
    assert err == "", err
    assert len(scaled) == ROWS and scaled == _rows(out), (scaled, out)  # the same ids


def test_at_a_rate_the_first_uint8_input_alone_is_refused_and_every_input_is_recorded_once(
        fleet, tmp_path, capsys):
    """Rule: with --rate, a uint8 file sends its first input alone until its answer says what
    stage 1 takes, so only that input is refused; it is sent again scaled under its own id,
    and every input is answered and recorded once (`report` reads them all completed)."""
    c = fleet["cluster"]
    before = _counts(c)
    runs = str(tmp_path / "runs")
    assert cli.main(["submit", "--images", fleet["npy"], "--endpoint", fleet["endpoint"],
                     "--rate", "40", "--count", str(2 * ROWS), "--timeout", "30",
                     "--out", runs] + fleet["keys"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [_note(fleet["npy"], REFUSED)], err
    rows = _rows(out)
    pid_ids = sorted(int(k.rsplit("-", 1)[1]) for k in rows)
    assert pid_ids == list(range(1, 2 * ROWS + 1)), out
    assert {v[0] for v in rows.values()} == {"completed"}, out
    after = _after(c, before, 2 * ROWS)
    assert after[1:] == (before[1] + 1, before[2]), (before, after)
    assert cli.main(["report", runs]) == 0
    row = capsys.readouterr().out.splitlines()[3].split()
    assert row[:6] == ["submit", "40.0", str(2 * ROWS), str(2 * ROWS), "0", str(2 * ROWS)], row


def test_with_the_fleets_bundle_known_a_uint8_file_is_scaled_before_anything_is_sent(
        fleet, capsys):
    """Rule: with --fleet, when the render's testbed.json names a bundle readable here, its
    stage-1 dtype scales the uint8 file before the first input goes (as `testbed` driving that
    fleet scales its replay set): the note names the bundle, and the source refuses nothing."""
    c = fleet["cluster"]
    before = _counts(c)
    assert cli.main(["submit", "--images", fleet["npy"], "--fleet", fleet["folder"],
                     "--source", "s1", "--timeout", "30"]) == 0
    out, err = capsys.readouterr()
    with open(os.path.join(fleet["folder"], "testbed.json")) as f:
        bundle = json.load(f)["bundle"]
    assert err.splitlines() == [_note(fleet["npy"], "per the fleet's bundle %s"
                                      % bundle)], err
    assert out.splitlines()[-2] == "%d sent: %d completed" % (ROWS, ROWS), out
    assert _after(c, before, ROWS)[1:] == before[1:], (before, _counts(c))


def test_float_images_left_at_0_255_are_not_scaled_and_the_source_refuses_each(
        fleet, tmp_path, capsys):
    """Rule: only uint8 is scaled: float32 images holding 0-255 are sent as they are, each
    refused by the source (bad_input, values far outside its replay set's, with its x / 255
    hint), no note, exit 1."""
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
    what stage 1 takes, exit 2, no note."""
    images = str(tmp_path / "int64.npy")
    np.save(images, np.load(fleet["npy"]).astype(np.int64))
    assert cli.main(["submit", "--images", images, "--endpoint", fleet["endpoint"],
                     "--timeout", "30"] + fleet["keys"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "edge-agent submit: error: --images: %s: inputs int64 (1, 8, 8) each, stage 1 takes "
        "float32 (1, 8, 8) each; %d input(s) not sent" % (images, ROWS - 1)], err
