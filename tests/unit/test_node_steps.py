"""The exit decision (``agent.node.steps.next_step``): one test per branch."""

from __future__ import annotations

from agent.node.steps import Step, next_step


class _Policy:
    """Records whether keep_local was asked (it may only be asked when this node serves h+1)."""

    def __init__(self, answer):
        self.answer, self.asked = answer, 0

    def __call__(self):
        self.asked += 1
        return self.answer


def test_confident_head_below_the_final_stage_exits():
    keep = _Policy(True)
    assert next_step(1, 4, 0.9, 0.8, True, True, keep) is Step.EXIT
    assert keep.asked == 0


def test_confidence_equal_to_the_threshold_exits():
    assert next_step(2, 4, 0.8, 0.8, True, False, _Policy(False)) is Step.EXIT


def test_final_stage_with_a_head_always_exits_whatever_the_threshold():
    assert next_step(4, 4, 0.1, 0.99, False, False, _Policy(False)) is Step.EXIT
    assert next_step(4, 4, 0.1, None, False, False, _Policy(False)) is Step.EXIT


def test_final_stage_without_a_confidence_is_dropped_as_no_output():
    assert next_step(4, 4, None, None, True, False, _Policy(True)) is Step.DROP
    assert Step.DROP.value == "no_output"


def test_unconfident_stage_without_features_is_dropped():
    assert next_step(2, 4, 0.3, 0.8, False, True, _Policy(True)) is Step.DROP


def test_stage_without_a_threshold_never_exits_early():
    assert next_step(1, 4, 0.999, None, True, False, _Policy(False)) is Step.FORWARD


def test_unconfident_task_is_forwarded_when_this_node_lacks_the_next_stage():
    keep = _Policy(True)
    assert next_step(1, 4, 0.3, 0.8, True, False, keep) is Step.FORWARD
    assert keep.asked == 0  # keep_local is asked only of a node serving the next stage


def test_unconfident_task_runs_locally_when_the_policy_keeps_it():
    keep = _Policy(True)
    assert next_step(1, 4, 0.3, 0.8, True, True, keep) is Step.LOCAL
    assert keep.asked == 1


def test_unconfident_task_is_forwarded_when_the_policy_offloads_it():
    keep = _Policy(False)
    assert next_step(1, 4, None, 0.8, True, True, keep) is Step.FORWARD
    assert keep.asked == 1
