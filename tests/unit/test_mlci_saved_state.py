"""MLCI's saved state (demo bundle's exit profile): no thresholds (every exit is on_head's),
a level worker's level and counts, a source none of them."""

from agent.policies.api import NodeView
from agent.policies.mlci.agent import MlciPolicy
from tests.unit.test_tiered_agent import BUNDLE_FLOPS, PROFILE, _Cfg

CONFIGURED = {1: 0.8, 2: 0.8, 3: 0.8}  # the node config's, which MLCI never exits at


def _view(node_id, role, last_stage, successors):
    return NodeView(node_id, role, 1 if role == "worker" else 0, 4, BUNDLE_FLOPS,
                    (3136.0,) * 4, (1, 2, 3), successors, (), {}, exit_profile=PROFILE,
                    last_stage=last_stage, alive=set(successors),
                    peer_stages={s: (1, 4) for s in successors})


def test_mlci_state_saves_no_unused_thresholds_and_a_source_no_level_counts():
    """Saved state names no thresholds (the config's are none MLCI uses, so they would
    mislead a reader or a restart); a level worker saves its level and counts, a source
    (no level) none of them."""
    edge = MlciPolicy(CONFIGURED, {}, seed=0)
    edge.configure(_Cfg(), _view("edge", "worker", 3, ("cloud",)))
    state = edge.snapshot()
    assert state["thresholds"] == {}
    assert state["mlci_level"] == 1 and state["mlci_escalated"] == 0
    src = MlciPolicy(CONFIGURED, {}, seed=0)
    src.configure(_Cfg(), _view("user", "source", 0, ("end",)))
    state = src.snapshot()
    assert state["thresholds"] == {}
    assert not [k for k in state if k.startswith("mlci_")]
