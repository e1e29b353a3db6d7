"""heads on the shipped demo with its exit heads removed: retrained on Fashion-MNIST training
images with the backbone frozen, the heads match the shipped ones on the replay set, and the
result builds, profiles and serves in the testbed with nothing lost."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from agent.cli import main as cli
from engines.bundle import load_bundle
from engines.demo import MULTI_EXIT_ONNX, REPLAY_PATH
from engines.demo.train_demo import CUT_TENSORS, DATA_DIR, EXIT_OUTPUTS, FINAL_OUTPUT, INPUT_NAME, load_split
from engines.exit_profile import load_exit_profile
from tests.integration.test_testbed import write_topology

NUM_TRAIN = 3000  # the first images of the official training split
MAX_DROP_POINTS = 3.0


def strip_heads(src: str, dst: str) -> onnx.ModelProto:
    """Remove the exit heads: delete every node that only feeds an exit output, and the exit
    outputs and their unused weights; what is left is the backbone image -> logits."""
    m = onnx.load(src)
    g = m.graph
    needed, keep = {FINAL_OUTPUT}, []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    kept = list(reversed(keep))
    del g.node[:]
    g.node.extend(kept)
    outputs = [o for o in g.output if o.name == FINAL_OUTPUT]
    del g.output[:]
    g.output.extend(outputs)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return m


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _replay_accuracy(path, names):
    with np.load(REPLAY_PATH) as z:
        x, y = z["x"], z["y"]
    return [float(np.mean(np.argmax(o, 1) == y)) for o in _session(path).run(names, {INPUT_NAME: x})]


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """The stripped backbone given `heads` at the demo's three cut tensors (2x2 average pooling +
    linear, the shipped heads' shape), on Fashion-MNIST training images stored as uint8."""
    if not os.path.isdir(DATA_DIR):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    d = tmp_path_factory.mktemp("heads_demo")
    backbone = strip_heads(MULTI_EXIT_ONNX, str(d / "backbone.onnx"))
    assert [o.name for o in backbone.graph.output] == [FINAL_OUTPUT]
    assert not any(n.output[0].startswith("exit") or "/exit" in n.output[0] for n in backbone.graph.node)
    images, labels = load_split("train")
    np.savez(d / "train.npz", x=images[:NUM_TRAIN, None], y=labels[:NUM_TRAIN])
    out = d / "multi_exit.onnx"
    assert cli(["heads", "--onnx", str(d / "backbone.onnx"), "--at", ",".join(CUT_TENSORS),
                "--data", str(d / "train.npz"), "--out", str(out), "--grid", "2"]) == 0
    return d


def test_retrained_heads_are_within_3_points_of_the_shipped_heads_on_the_replay_set(retrained):
    """Each retrained head's replay-set accuracy is at most 3 points below the shipped head's,
    and the final head is the shipped backbone's own, unchanged."""
    names = list(EXIT_OUTPUTS) + [FINAL_OUTPUT]
    shipped = _replay_accuracy(MULTI_EXIT_ONNX, names)
    mine = _replay_accuracy(str(retrained / "multi_exit.onnx"), names)
    for name, s, m in zip(names, shipped, mine):
        assert 100.0 * (s - m) <= MAX_DROP_POINTS, "%s: shipped %.4f, retrained %.4f" % (name, s, m)
    assert mine[-1] == shipped[-1]


def test_retrained_graph_builds_profiles_and_serves_with_nothing_lost(retrained, capsys):
    """The written graph goes through build and profile as it is, and a short testbed run on the
    resulting bundle completes every task it creates (0 lost)."""
    bundle_dir = str(retrained / "bundle")
    assert cli(["build", "--onnx", str(retrained / "multi_exit.onnx"), "--cuts", ",".join(CUT_TENSORS),
                "--exits", "1:exit1,2:exit2,3:exit3", "--final", FINAL_OUTPUT, "--out", bundle_dir]) == 0
    bundle = load_bundle(bundle_dir)
    assert bundle.num_stages == 4 and bundle.early_exit_stages == (1, 2, 3)
    with np.load(REPLAY_PATH) as z:  # the testbed's replay set, next to the bundle
        np.savez(retrained / "replay.npz", x=z["x"][:300], y=z["y"][:300])
    assert cli(["profile", "--bundle", bundle_dir, "--data", str(retrained / "replay.npz")]) == 0
    profile = load_exit_profile(os.path.join(bundle_dir, "exit_profile.npz"))
    assert profile.num_samples == 300 and profile.exit_stages == (1, 2, 3, 4)
    topo, _ = write_topology(retrained, bundle_dir)
    result = retrained / "result.json"
    capsys.readouterr()
    rc = cli(["testbed", "--topology", topo, "--policies", "dtoee", "--rates", "20", "--duration", "2",
              "--out", str(retrained / "out"), "--json", str(result), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    run = json.loads(result.read_text())["runs"][0]
    assert run["created"] > 0 and run["lost"] == 0 and run["completed"] == run["created"]
