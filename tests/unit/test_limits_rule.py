"""A node's ``max_message_bytes`` and ``max_queue_bytes`` against the tensors it receives
(``agent.node.limits``): the header bound holds every TASK header the agents and clients
make, the rule's edges (a limit at the tensor size fails, one at tensor + header passes), what
each role receives, the one line a failing config raises (stage, tensor bytes, limit, the
value to raise it to) and the words of a message dropped as oversized. Real bundles (the demo
bundle, or one whose manifest describes big tensors) and real wire encodings."""

from __future__ import annotations

import dataclasses
import os
import secrets

import numpy as np
import pytest

from agent.config.checks import NODE_ID_MAX_CHARS
from agent.config.node import NodeConfig, Peer
from agent.errors import UsageError
from agent.fleet.client_wire import task_frames
from agent.node import build
from agent.node.limits import (LimitError, check_limits, check_message_size, received_stages,
                               task_header_bytes)
from agent.protocol import wire
from agent.protocol.wire import Kind, WireError
from engines.bundle import Bundle, load_bundle
from engines.demo import DEMO_BUNDLE_DIR

DEMO = load_bundle(DEMO_BUNDLE_DIR)  # stage inputs 3136, 6272, 3136, 6272 bytes, 10 classes


def _peer(pid, stage):
    return Peer(id=pid, stage=stage, control_address="tcp://127.0.0.1:7001",
                data_address="tcp://127.0.0.1:7002")


def _cfg(role="worker", stage=2, **over):
    """A node config of the demo bundle: a worker of ``stage`` between a stage-``stage - 1``
    peer and a stage-``stage + 1`` one, or a source."""
    peers = (_peer("s1", 0), _peer("p", stage - 1), _peer("n", stage + 1)) \
        if role == "worker" else (_peer("w1", 1),)
    kw = dict(node_id="n1" if role == "worker" else "s1", role=role,
              stage=stage if role == "worker" else 0, bundle=DEMO.path, state_dir="/nonexistent",
              control_bind="tcp://127.0.0.1:7003", data_bind="tcp://127.0.0.1:7004",
              peers=peers, policy="cf")
    kw.update(over)
    return NodeConfig(**kw)


def _header(shape, dtype="float32"):
    return task_header_bytes(shape, dtype, DEMO.num_classes)


def test_the_header_bound_holds_every_task_header_agents_and_clients_make():
    """Rule: ``task_header_bytes`` is at least the header of a source's stage-1 TASK (longest
    node id, its id form and token, a deadline), of a worker's forwarded TASK with MLCI's
    running ensemble of one number per class, and of a client's TASK; and it is a few hundred
    bytes, not a guess of kilobytes."""
    node = "n" * NODE_ID_MAX_CHARS
    x = np.zeros((1, 8, 14, 14), np.float32)
    big = wire.MAX_INT - 1
    issued = {"id": "%s-%s" % (node, os.urandom(8).hex()), "source": node, "stage": 2,
              "attempt": 2, "created": 1.7e9, "hops": 3, "resends": 9, "ttl_s": 19.99,
              "token": secrets.token_hex(8)}
    forwarded = dict(issued, stage=big, attempt=big, hops=big, resends=big, level=big,
                     ens=[0.123456789] * DEMO.num_classes, ens_w=0.5)
    bound = _header(x.shape)
    for fields in (issued, forwarded):
        frames = wire.encode(Kind.TASK, node, fields, [x], slot=big, round=big)
        assert memoryview(frames[0]).nbytes <= bound
    client = task_frames(x, "client-%d-%d" % (4194304, 10 ** 9), "camera-program")
    assert memoryview(client[0]).nbytes <= bound
    assert 200 < bound < 2048, bound


def test_a_limit_at_the_tensor_size_fails_and_tensor_plus_header_is_the_value_named():
    """Rule: a worker's max_message_bytes must hold its stage's tensor plus the header bound:
    exactly the tensor's size (the header adds bytes) fails, as does anything between half
    of it and it; the value the line names passes, one byte less fails."""
    need = 6272 + _header((1, 8, 14, 14))
    for limit in (6272, 3137, need - 1):
        with pytest.raises(LimitError) as got:
            check_limits(_cfg(max_message_bytes=limit), DEMO)
        line = str(got.value)
        assert line.startswith("max_message_bytes: %d " % limit), line
        assert "worker n1" in line and "stage-2 task" in line and "6272 tensor bytes" in line
        assert line.endswith("raise max_message_bytes to %d or more" % need), line
        assert got.value.fix == "max_message_bytes = %d (or more) in the node config" % need
        assert "\n" not in line and isinstance(got.value, UsageError)
    assert "holds the largest message, %d bytes (stage 2)" % need in check_limits(
        _cfg(max_message_bytes=need), DEMO)


def test_a_worker_holding_several_stages_needs_the_largest_and_a_tier_only_its_first():
    """Rule: a worker of stages 1..3 receives tasks of each (its largest input, stage 2's,
    sets the need); a terminal tier of the same stages receives only stage-1 tasks."""
    need2 = 6272 + _header((1, 8, 14, 14))
    need1 = 3136 + _header((1, 1, 28, 28))
    multi = _cfg(stage=1, last_stage=3, max_message_bytes=need2 - 1)
    assert received_stages(multi) == (1, 2, 3)
    with pytest.raises(LimitError, match="stage-2 task"):
        check_limits(multi, DEMO)
    tier = dataclasses.replace(multi, terminal=True, max_message_bytes=need1)
    assert received_stages(tier) == (1,)
    assert "(stage 1)" in check_limits(tier, DEMO)


def test_max_queue_bytes_below_one_input_tensor_fails_naming_it():
    """Rule: a worker refuses a task that would take its held tensors past max_queue_bytes,
    so a bound below one input tensor refuses every task: it does not start, and the line
    names max_queue_bytes, the stage, the tensor bytes and the value; the tensor size passes."""
    with pytest.raises(LimitError) as got:
        check_limits(_cfg(max_queue_bytes=6271), DEMO)
    line = str(got.value)
    assert line.startswith("max_queue_bytes: 6271 is below one stage-2 input (6272 tensor "
                           "bytes) of worker n1"), line
    assert line.endswith("raise max_queue_bytes to 6272 or more"), line
    assert "max_queue_bytes 6272 holds a stage-2 input" in check_limits(
        _cfg(max_queue_bytes=6272), DEMO)


def test_a_source_is_checked_only_for_what_its_clients_send():
    """Rule: a source with arrival = "client" receives stage-1 inputs on its client socket
    (checked against max_message_bytes; a source holds no received tensor against
    max_queue_bytes); one that replays its own inputs receives no tensors at all."""
    client = _cfg(role="source", arrival="client", client_bind="ipc:///tmp/c.sock",
                  max_message_bytes=3136, max_queue_bytes=1024)
    assert received_stages(client) == (1,)
    with pytest.raises(LimitError, match=r"source s1 receives \(a stage-1 task from a client: "
                                         r"3136 tensor bytes"):
        check_limits(client, DEMO)
    ok = dataclasses.replace(client, max_message_bytes=3136 + _header((1, 1, 28, 28)))
    assert "(stage 1)" in check_limits(ok, DEMO)
    replaying = _cfg(role="source", max_message_bytes=1024, max_queue_bytes=1024)
    assert received_stages(replaying) == ()
    assert "receives no tensors" in check_limits(replaying, DEMO)


def test_check_config_runs_the_limits_after_the_placement_checks():
    """Rule: ``build.check_config`` (what ``run``, ``doctor`` and the testbed call) raises the
    limits' line for a config that is otherwise fine, and a placement fault first."""
    with pytest.raises(LimitError):
        build.check_config(_cfg(max_message_bytes=4096), DEMO)
    with pytest.raises(UsageError) as got:  # no stage-3 peer: that comes first
        build.check_config(_cfg(max_message_bytes=4096, peers=(_peer("p", 1),)), DEMO)
    assert not isinstance(got.value, LimitError) and "peers:" in str(got.value)
    assert "holds the largest message" in build.check_config(_cfg(), DEMO)


def test_a_tensor_above_what_max_message_bytes_may_be_names_the_model_as_the_fix():
    """Rule: a stage input whose task is above the 1 GiB max_message_bytes may be fails with
    a line saying the model must be cut elsewhere (no value to raise it to exists)."""
    stages = list(DEMO.stages)
    stages[1] = dataclasses.replace(stages[1], input_shape=(1, 256, 1024, 1024),
                                    input_bytes=4 * 256 * 1024 * 1024)
    huge = Bundle(DEMO.path, "huge", tuple(stages), DEMO.num_classes, None)
    with pytest.raises(LimitError) as got:
        check_limits(_cfg(max_message_bytes=1 << 30), huge)
    assert "1073741824 tensor bytes" in str(got.value) and "cut the model" in str(got.value)


def test_an_oversized_message_is_refused_naming_its_size_and_the_limit():
    """Rule: a received message above max_message_bytes raises the wire's ``oversized``
    with its size and the limit in the detail (what the drop's log line and a client's
    answer say); one of exactly the limit passes."""
    frames = wire.encode(Kind.TASK, "w1", {"id": "t", "source": "s1", "stage": 2,
                                           "attempt": 0, "created": 0.0, "hops": 0,
                                           "resends": 0}, [np.zeros((1, 8, 14, 14), np.float32)])
    size = wire.frames_nbytes(frames)
    check_message_size(frames, size)
    with pytest.raises(WireError) as got:
        check_message_size(frames, size - 1)
    assert got.value.reason == "oversized"
    assert str(got.value) == ("oversized: message above max_message_bytes: %d bytes, the "
                              "limit is %d" % (size, size - 1))
