"""A DTO-EE source plans a whole configuration phase with one rate, the one its view carried
as the phase began (``plan`` and the simulator hold a source's rate fixed within a phase): a
client source's estimate that changes mid-phase (the node's slot timer is not aligned with
DTO-EE's wall-clock slots) is taken at the next phase. Real policy objects, a node config and
view; the wall clock is handed in."""

from __future__ import annotations

from agent.config.node import NodeConfig, Peer
from agent.policies.api import NodeView
from agent.policies.dtoee.agent import DtoeePolicy


def _source():
    peers = (Peer("w1", 1, "tcp://x:3", "tcp://x:4"), Peer("w2", 1, "tcp://x:5", "tcp://x:6"))
    cfg = NodeConfig(node_id="s1", role="source", stage=0, bundle="/b", state_dir="/s",
                     control_bind="tcp://127.0.0.1:1", data_bind="tcp://127.0.0.1:2",
                     peers=peers, arrival="client", client_bind="ipc:///tmp/s1-client")
    view = NodeView(node_id="s1", role="source", stage=0, num_stages=2, stage_flops=(1.0, 1.0),
                    stage_input_bytes=(1.0, 1.0), exit_stages=(), successors=("w1", "w2"),
                    predecessors=(), link_rate_bytes_s={"w1": 1e6, "w2": 1e6},
                    arrival_rate_tasks_s=12.0, alive={"w1", "w2"})
    pol = DtoeePolicy({}, {})
    pol.configure(cfg, view)
    return pol, view


def test_a_rate_that_changes_mid_phase_is_taken_at_the_next_phase():
    """Rule: the rate the source plans with stays 12/s through the phase begun at 12/s though
    its view moves to 32/s meanwhile; after the phase it is 32/s, and the next phase begins
    with it."""
    pol, view = _source()
    wall = [1000.0 * pol.slot_length_s]
    pol.wall = lambda: wall[0]
    pol.on_tick(view, 0.0)  # the slot's phase starts
    assert pol.configuring
    view.arrival_rate_tasks_s = 32.0
    assert pol._rate(view) == 12.0 and pol.req_rate == 12.0
    wall[0] += pol.slot_length_s  # the next slot: that phase ends, the next begins
    pol.on_tick(view, 1.0)
    assert pol.configuring and pol._rate(view) == 32.0 and pol.req_rate == 32.0
