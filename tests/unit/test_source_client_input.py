"""A source's check of a local client's input, with its real book, records file and outbox (the
demo bundle: stage 1 takes float32 (1, 1, 28, 28), its replay set in [0, 1]): uint8 images of
stage 1's shape are scaled to [0, 1] as the replay set is and become tasks, said once per run
at INFO and never counted as a refusal; every other dtype or shape stays refused."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.fleet.client_wire import task_frames
from agent.policies.api import AgentPolicy
from agent.protocol import wire
from engines.profile import as_input
from tests.unit.source_parts import source_parts

SCALING = "client inputs in uint8 are scaled to [0, 1]"


@pytest.fixture
def source(tmp_path):
    parts = source_parts(tmp_path, AgentPolicy({}, {}))
    parts.view.alive.add("w1")
    yield parts.side, parts.out
    parts.close()


def _push(side, x, tid):
    """``x`` pushed by a client as ``agent.fleet.client`` encodes it (decoded as the loop does)."""
    side.on_client(b"c1", wire.decode(task_frames(x, tid, "c1")))


def _drops(out):
    return {k: v for k, v in out.counters.items() if k.startswith("drop_") and v}


def _scaling_lines(caplog):
    return [r for r in caplog.records
            if r.name == "agent.node.source" and SCALING in r.getMessage()]


def test_uint8_images_for_a_float_stage_1_become_tasks_scaled_as_the_replay_set_is(
        source, caplog):
    """Rule: a client's uint8 (1, 1, 28, 28) for the demo's float32 stage 1 becomes a task whose
    tensor is as_input's float32 x / 255 (what the replay set feeds the engine), with no
    refusal counted and one INFO line for all of 20 such inputs."""
    side, out = source
    caplog.set_level(logging.INFO, logger="agent.node.source")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(20, 1, 1, 28, 28)).astype(np.uint8)
    images[0].flat[:2] = (0, 255)  # both ends of the range: 0.0 and 1.0
    for i, x in enumerate(images):
        _push(side, x, "c-%d" % i)
    tasks = sorted(side.book.pending.values(), key=lambda t: int(t.client[1].split("-")[1]))
    assert [t.client for t in tasks] == [(b"c1", "c-%d" % i) for i in range(20)]
    for task, x in zip(tasks, images):
        assert task.x.dtype == np.float32 and task.x.shape == (1, 1, 28, 28)
        np.testing.assert_array_equal(task.x, as_input(x, "float32"))
    assert tasks[0].x.min() == 0.0 and tasks[0].x.max() == 1.0
    assert side.answers == [] and _drops(out) == {}
    (line,) = _scaling_lines(caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("client inputs in uint8 are scaled to [0, 1] as float32 "
                                        "for stage 1 (x / 255)"), line.getMessage()


@pytest.mark.parametrize("x,counter,detail", [
    (np.zeros((1, 28, 28), np.uint8), "drop_bad_shape",
     "input uint8 (1, 28, 28); stage 1 takes float32 (1, 1, 28, 28)"),
    (np.zeros((1, 1, 28, 28), np.int64), "drop_bad_shape",
     "input int64 (1, 1, 28, 28); stage 1 takes float32 (1, 1, 28, 28)"),
    (np.full((1, 1, 28, 28), 200.0, np.float32), "drop_bad_input",
     "input values in [200, 200], far outside the [0, 1] of the source's replay set: scale it "
     "as the model's inputs are (images stored as 0-255? x / 255)"),
], ids=["uint8-of-another-shape", "int64", "float-0-255"])
def test_other_inputs_stay_refused_and_nothing_is_scaled(source, caplog, x, counter, detail):
    """Rule: only uint8 of stage 1's shape is scaled: uint8 of another shape, another integer
    dtype (int64) and floats holding 0-255 are each refused (error, bad_input, the detail
    saying why), counted as before, no task made and no scaling line logged."""
    side, out = source
    caplog.set_level(logging.INFO, logger="agent.node.source")
    _push(side, x, "c-1")
    assert not side.book.pending and _drops(out) == {counter: 1}
    ((ident, fields),) = side.answers
    assert (ident, fields["id"], fields["outcome"], fields["reason"]) == (
        b"c1", "c-1", "error", "bad_input")
    assert fields["detail"] == detail
    assert _scaling_lines(caplog) == []


def test_uint8_images_are_not_scaled_for_a_model_fed_0_to_255_floats(source, tmp_path):
    """Rule: a replay set of floats in [0, 255] says the model takes unscaled pixels, so a
    client's uint8 images are not scaled to [0, 1] (they would be answered, wrongly): they stay
    refused as a dtype stage 1 does not take."""
    from agent.node.book import ReplaySet
    from engines.demo import REPLAY_PATH

    side, out = source
    data = np.load(REPLAY_PATH)
    raw = tmp_path / "raw255.npz"
    np.savez(str(raw), x=(data["x"].astype(np.float32) * 255.0), y=data["y"])
    side.replay = ReplaySet(str(raw), (1, 1, 28, 28), "float32")
    assert not side.replay.unit_scale
    _push(side, np.full((1, 1, 28, 28), 200, dtype=np.uint8), "c-raw")
    assert not side.book.pending and _drops(out) == {"drop_bad_shape": 1}
