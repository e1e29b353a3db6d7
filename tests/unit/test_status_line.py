"""The status line a node logs every status_interval_s (agent.node.status)."""


def test_a_workers_status_line_shows_the_threshold_of_its_stage_in_force(tmp_path):
    """DTO-EE's threshold changes are logged at DEBUG only; the status line every
    status_interval_s carries the threshold in force instead (sources have none)."""
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
    status = NodeStatus(cfg, AgentPolicy({1: 0.8125}, {}), view, {})
    assert status.line().endswith(" threshold=0.812")
