"""Message and queue limits against a bundle with big-ish tensors, on real agents.

A two-stage bundle whose stage-2 input (the cut tensor) is 64 KiB: a node whose
``max_message_bytes`` cannot hold the largest TASK it receives (tensor plus the header
bound), or a worker whose ``max_queue_bytes`` is below one input tensor, is refused before it
serves by ``run`` (exit 78, one line), ``doctor --config`` (its ``node limits`` line, the same
words) and ``edge-agent testbed`` (exit 2 before any agent starts or the run folder exists).
A fleet set exactly at the values those lines name serves every task, and a message above the
limit is dropped with a log line naming its size and the limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zmq

from agent.cli import main
from agent.config.node import dump_config
from agent.node.limits import task_header_bytes
from agent.protocol import wire

from .agent_cluster import REPO, Cluster

CUT_SHAPE = (1, 16, 32, 32)  # stage 2's input: 65536 bytes of float32
CUT_BYTES = 4 * 16 * 32 * 32
INPUT_BYTES = 4 * 3 * 32 * 32  # stage 1's input: 12288 bytes
CLASSES = 4


def _make_model(path: str) -> None:
    """conv(3->16) = feat1 (the cut) with an exit head; conv(16->8) and the final head."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)

    def w(name, *shape):
        return nh.from_array((rng.normal(0, 0.3, shape)).astype(np.float32), name)

    inits = [w("c1w", 16, 3, 3, 3), w("c1b", 16), w("c2w", 8, 16, 1, 1), w("c2b", 8),
             w("e1w", 16, CLASSES), w("e1b", CLASSES), w("fw", 8, CLASSES), w("fb", CLASSES)]
    nodes = [h.make_node("Conv", ["image", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c1"], ["feat1"]),
             h.make_node("GlobalAveragePool", ["feat1"], ["g1"]),
             h.make_node("Flatten", ["g1"], ["f1"]),
             h.make_node("Gemm", ["f1", "e1w", "e1b"], ["exit1"]),
             h.make_node("Conv", ["feat1", "c2w", "c2b"], ["c2"]),
             h.make_node("Relu", ["c2"], ["feat2"]),
             h.make_node("GlobalAveragePool", ["feat2"], ["g2"]),
             h.make_node("Flatten", ["g2"], ["f2"]),
             h.make_node("Gemm", ["f2", "fw", "fb"], ["logits"])]
    graph = h.make_graph(nodes, "big", [h.make_tensor_value_info("image", T.FLOAT,
                                                                 ["batch", 3, 32, 32])],
                         [h.make_tensor_value_info(n, T.FLOAT, ["batch", CLASSES])
                          for n in ("exit1", "logits")], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """(bundle dir, replay set) of the two-stage model cut at its 64 KiB tensor."""
    from engines.build import build_bundle

    d = tmp_path_factory.mktemp("big")
    _make_model(str(d / "big.onnx"))
    build_bundle(str(d / "big.onnx"), ["feat1"], {1: "exit1"}, str(d / "bundle"),
                 final_output="logits")
    rng = np.random.default_rng(1)
    np.savez(str(d / "replay.npz"), x=rng.random((16, 3, 32, 32), dtype=np.float32),
             y=rng.integers(0, CLASSES, 16))
    return str(d / "bundle"), str(d / "replay.npz")


def _need(shape, nbytes):
    return nbytes + task_header_bytes(shape, "float32", CLASSES)


NEED2 = _need(CUT_SHAPE, CUT_BYTES)  # what a stage-2 worker's max_message_bytes must hold
NEED1 = _need((1, 3, 32, 32), INPUT_BYTES)


def _cluster(tmp_path, big, **common):
    bundle, replay = big
    return Cluster(str(tmp_path / "fleet"), bundle, {"s1": 0, "w1": 1, "w2": 2},
                   replay_path=replay, policy="cf", thresholds=(1.0, 1.0),
                   emulate_capacity_flops=1e9, **common)


def _write(c: Cluster, node: str, **over) -> str:
    path = os.path.join(c.root, "%s.toml" % node)
    os.makedirs(c.root, exist_ok=True)
    with open(path, "w") as f:
        f.write(dump_config(c.config(node, **over)))
    return path


def _run(path: str):
    """``python -m agent run --config PATH``: (exit status, stderr lines)."""
    done = subprocess.run([sys.executable, "-m", "agent", "run", "--config", path], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def _doctor(path: str, capsys) -> dict:
    capsys.readouterr()
    main(["doctor", "--json", "--config", path])
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}


@pytest.mark.parametrize("field,value,words", [
    ("max_message_bytes", CUT_BYTES,  # exactly the tensor: the header does not fit
     ("max_message_bytes: %d is below the largest message worker w2 receives (a stage-2 task: "
      "%d tensor bytes + up to %d header bytes)" % (CUT_BYTES, CUT_BYTES, NEED2 - CUT_BYTES),
      "raise max_message_bytes to %d or more" % NEED2)),
    ("max_message_bytes", CUT_BYTES // 3,  # ZeroMQ would cut the sender off: nothing counted
     ("max_message_bytes: %d is below" % (CUT_BYTES // 3), "stage-2 task",
      "raise max_message_bytes to %d or more" % NEED2)),
    ("max_queue_bytes", CUT_BYTES - 1,
     ("max_queue_bytes: %d is below one stage-2 input (%d tensor bytes) of worker w2"
      % (CUT_BYTES - 1, CUT_BYTES), "raise max_queue_bytes to %d or more" % CUT_BYTES)),
])
def test_run_exits_78_on_a_limit_below_its_stage_and_doctor_says_the_same(
        tmp_path, big, capsys, field, value, words):
    """Rule: a stage-2 worker whose max_message_bytes cannot hold a stage-2 task (at the
    tensor's own size, or below half of it) or whose max_queue_bytes is below one stage-2
    input exits 78 with one line naming the stage, the tensor bytes, the limit and the value
    to raise it to; doctor --config FAILs its "node limits" step with that line and the value
    as the fix."""
    c = _cluster(tmp_path, big)
    path = _write(c, "w2", **{field: value})
    rc, err = _run(path)
    assert rc == 78 and len(err) == 1, err
    for w in words:
        assert w in err[0], err
    checks = _doctor(path, capsys)
    line = checks["node limits"]
    assert line["status"] == "FAIL" and line["detail"] in err[0], (line, err)
    need = NEED2 if field == "max_message_bytes" else CUT_BYTES
    assert line["fix"] == "%s = %d (or more) in the node config" % (field, need)
    assert checks["node bundle"]["status"] == "OK" and "node policy" not in checks


def test_a_client_fed_source_needs_room_for_a_stage_one_input(tmp_path, big, capsys):
    """Rule: a source with arrival = "client" receives stage-1 inputs: a max_message_bytes
    that holds no stage-1 task stops it (exit 78, naming stage 1 and the clients), while the
    same limit on a source replaying its own inputs is fine (it receives no tensors)."""
    c = _cluster(tmp_path, big)
    client = _write(c, "s1", arrival="client", max_message_bytes=INPUT_BYTES,
                    client_bind="ipc://%s" % os.path.join(str(tmp_path), "c.sock"))
    rc, err = _run(client)
    assert rc == 78 and len(err) == 1, err
    assert "source s1 receives (a stage-1 task from a client: %d tensor bytes" % INPUT_BYTES \
        in err[0] and "raise max_message_bytes to %d or more" % NEED1 in err[0], err
    replaying = _write(c, "s1", max_message_bytes=INPUT_BYTES)
    line = _doctor(replaying, capsys)["node limits"]
    assert line["status"] == "OK" and "receives no tensors" in line["detail"], line


@pytest.mark.parametrize("field,value", [("max_message_bytes", CUT_BYTES),
                                         ("max_queue_bytes", CUT_BYTES // 2)])
def test_the_testbed_refuses_such_a_topology_before_any_agent_starts(
        tmp_path, big, capsys, field, value):
    """Rule: ``edge-agent testbed`` checks every agent's limits as ``run`` would, before the
    run folder exists: exit 2, one line naming the worker, the stage and the value."""
    bundle, replay = big
    topo = {"bundle": bundle, "warmup_s": 0.5, "slot_s": 2.0,
            "agent": {"replay_path": replay, field: value},
            "sources": [{"id": "cam", "share": 1.0}],
            "workers": [{"id": "w1", "stage": 1, "emulate_capacity_flops": 1e9},
                        {"id": "w2", "stage": 2, "emulate_capacity_flops": 1e9}],
            "links": [{"from": "cam", "to": "w1"}, {"from": "w1", "to": "w2"}]}
    path = tmp_path / "topo.json"
    path.write_text(json.dumps(topo))
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["testbed", "--topology", str(path), "--policies", "cf", "--rates", "1",
               "--duration", "2", "--out", str(out), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "%s: %d is below" % (field, value) in err[0] and "worker w2" in err[0], err
    assert "stage-2" in err[0] and "raise %s to " % field in err[0], err
    assert not out.exists()


def test_a_fleet_at_exactly_the_named_limits_serves_and_an_oversized_drop_names_its_size(
        tmp_path, big):
    """Rule: the values the lines name are enough: workers whose max_message_bytes and
    max_queue_bytes are exactly those complete every task through stage 2; a message above
    the limit is still dropped (``drop_oversized``), its log line naming its size and the
    limit."""
    c = _cluster(tmp_path, big)
    ctx = zmq.Context()
    try:
        c.start("w2", max_message_bytes=NEED2, max_queue_bytes=CUT_BYTES)
        c.start("w1", max_message_bytes=NEED1, max_queue_bytes=INPUT_BYTES)
        c.wait_for(lambda: c.stats("w2") is not None and c.stats("w1") is not None, 60,
                   "workers up")
        c.start("s1", arrival_rate_tasks_s=5.0, max_tasks=6)
        c.wait_for(lambda: c.finished("s1", 6), 60, "6 tasks answered")
        assert c.tasks("s1")["completed"] == 6, c.tasks("s1")
        probe = ctx.socket(zmq.DEALER)
        probe.setsockopt(zmq.LINGER, 0)
        probe.setsockopt(zmq.ROUTING_ID, b"probe")
        probe.connect(c.peer("w2").data_address)
        x = np.zeros((1, 16, 40, 32), np.float32)  # between the limit and twice it
        frames = wire.encode(wire.Kind.TASK, "w1", {
            "id": "big", "source": "s1", "stage": 2, "attempt": 0, "created": 0.0, "hops": 1,
            "resends": 0}, [x])
        size = wire.frames_nbytes(frames)
        assert NEED2 < size < 2 * NEED2
        probe.send_multipart(frames)
        c.wait_for(lambda: (c.stats("w2") or {}).get("counters", {}).get("drop_oversized"),
                   30, "the oversized message counted")
    finally:
        c.stop_all()
        ctx.destroy(linger=0)
    counters = c.stats("w2")["counters"]
    assert counters.get("tasks_in", 0) >= 1 and counters["drop_oversized"] == 1, counters
    with open(c.logs["w2"]) as f:
        log = f.read()
    assert ("dropped a message from probe: oversized: message above max_message_bytes: %d "
            "bytes, the limit is %d" % (size, NEED2)) in log, log[-3000:]
