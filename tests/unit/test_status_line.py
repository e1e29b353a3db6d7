"""The status line a node logs every status_interval_s (agent.node.status)."""


import logging


def _status(tmp_path, counters=None, **clocks):
    """A stage-1 worker's NodeStatus (``clocks``: its ``wall`` and ``mono``, when given)."""
    from agent.config.node import parse_config
    from agent.node.status import NodeStatus
    from agent.policies.api import AgentPolicy, NodeView

    peer = {"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5561",
            "data_address": "tcp://127.0.0.1:5562"}
    cfg = parse_config({"node_id": "w1", "role": "worker", "stage": 1, "bundle": "b",
                        "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:5551",
                        "data_bind": "tcp://127.0.0.1:5552", "security": "none",
                        "peers": [peer], "terminal": True}, str(tmp_path))
    view = NodeView("w1", "worker", 1, 2, (1.0, 1.0), (4.0, 4.0), (1,), (), ("s1",), {})
    return NodeStatus(cfg, AgentPolicy({1: 0.8125}, {}), view, {} if counters is None else counters,
                      **clocks)


def test_a_workers_status_line_shows_the_threshold_of_its_stage_in_force(tmp_path):
    """DTO-EE's threshold changes are logged at DEBUG only; the status line every
    status_interval_s carries the threshold in force instead (sources have none)."""
    assert _status(tmp_path).line().endswith(" threshold=0.812")


def test_an_unchanged_status_line_is_logged_again_only_after_the_repeat_interval(tmp_path,
                                                                                   caplog):
    """Rule: the status line is logged when it changed since the last one logged; an
    unchanged line only once every STATUS_REPEAT_S, so an idle node does not write the same
    line every status_interval_s; a change is logged at the next call."""
    from agent.node.status import STATUS_REPEAT_S

    counters = {}
    status = _status(tmp_path, counters)
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    assert status.log_line(100.0)  # the first line
    assert not status.log_line(105.0) and not status.log_line(100.0 + STATUS_REPEAT_S - 1)
    counters["drop_deadline"] = 2
    assert status.log_line(100.0 + STATUS_REPEAT_S - 0.5)  # changed: dropped=2
    assert not status.log_line(100.0 + STATUS_REPEAT_S)
    assert status.log_line(100.0 + 2 * STATUS_REPEAT_S)  # unchanged for the repeat interval
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "dropped=0" in lines[0] and "dropped=2" in lines[1] and lines[2] == lines[1]
