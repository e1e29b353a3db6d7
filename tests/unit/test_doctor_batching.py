"""`doctor --config` on a worker with ``engine_batch_max`` above 1: the line says which stages
will run waiting tasks as one engine call and names each that will not with the reason the
agent logs at start-up (``agent.node.batching``): a fixed batch in the bundle, an emulated
device, a policy keeping each head's logits. Real configs, the demo bundle; nothing loaded."""

from __future__ import annotations

import json
import logging
import shutil

from agent.node.batching import EMULATED, batch_limits
from agent.ops.doctor import OK, WARN
from agent.ops.doctor_batch import NAME
from agent.ops.doctor_node import check_node
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_doctor_node import _by_name, _node


def test_a_worker_whose_stage_batches_gets_an_ok_line(tmp_path):
    """Rule: every stage able to batch: OK, naming the stage and the limit."""
    checks, _ = check_node(_node(tmp_path, "w4", engine_batch_max=8))
    line = _by_name(checks)[NAME]
    assert line.status == OK, line
    assert line.detail == "engine_batch_max 8: stage 4: up to 8 waiting tasks as one engine call"


def test_no_line_where_batching_is_off(tmp_path):
    """Rule: ``engine_batch_max`` 1 (the default) has no line of its own."""
    checks, _ = check_node(_node(tmp_path, "w4"))
    assert NAME not in _by_name(checks) and checks[-1].status in (OK, WARN)


def test_an_emulated_device_is_warned_with_the_agents_reason(tmp_path, caplog):
    """Rule: an emulated device runs one task per call: a WARN with the reason in the words
    the agent's start-up WARNING uses, and a fix."""
    checks, _ = check_node(_node(tmp_path, "w4", engine_batch_max=4,
                                 emulate_capacity_flops=1000000000))
    line = _by_name(checks)[NAME]
    assert line.status == WARN and line.fix.startswith("set engine_batch_max = 1"), line
    assert line.detail == "engine_batch_max 4: stage 4: one task per call (%s)" % EMULATED
    with caplog.at_level(logging.WARNING, logger="agent.node.batching"):
        batch_limits({4: object()}, 4, EMULATED)
    assert "stage 4 runs one task per call (%s)" % EMULATED in caplog.records[0].getMessage()


def test_a_fixed_batch_in_the_bundle_is_warned_with_how_to_get_one(tmp_path):
    """Rule: a stage whose bundle input has a fixed batch runs one task per call: a WARN whose
    fix also points at building the bundle with a dynamic batch."""
    bundle = tmp_path / "fixed"
    shutil.copytree(DEMO_BUNDLE_DIR, str(bundle))
    manifest = bundle / "bundle.json"
    doc = json.loads(manifest.read_text())
    for stage in doc["stages"]:
        stage["dynamic_batch"] = False
    manifest.write_text(json.dumps(doc))
    assert not load_bundle(str(bundle)).stage(4).dynamic_batch
    checks, _ = check_node(_node(tmp_path, "w4", engine_batch_max=8, bundle=str(bundle)))
    line = _by_name(checks)[NAME]
    assert line.status == WARN, line
    assert "stage 4: one task per call (its input has a fixed batch of 1 in the bundle)" in \
        line.detail and "dynamic batch" in line.fix


def test_a_bundle_or_config_fault_leaves_the_line_out(tmp_path):
    """Rule: the line comes only after every start-up step passed (a FAIL ends the report
    there, as `run` would stop there)."""
    checks, _ = check_node(_node(tmp_path, "w4", engine_batch_max=8,
                                 bundle=str(tmp_path / "missing")))
    assert checks[-1].status == "FAIL" and NAME not in _by_name(checks)


def test_a_policy_keeping_each_heads_logits_is_warned(tmp_path):
    """Rule: a policy with ``wants_logits`` (MLCI) runs one task per call; ``check_batching``
    is handed the policy `run` would make (MLCI's needs levels, so a stand-in with its flag)."""
    from types import SimpleNamespace

    from agent.node.batching import KEEPS_LOGITS
    from agent.ops.doctor_batch import check_batching

    _, cfg = check_node(_node(tmp_path, "w4", engine_batch_max=8))
    line = check_batching(cfg, load_bundle(DEMO_BUNDLE_DIR), SimpleNamespace(wants_logits=True))
    assert line.status == WARN and KEEPS_LOGITS in line.detail, line
