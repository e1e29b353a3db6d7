"""MDI-Exit's D_nm in the agent: measured task transfers (``on_transfer``) replace the
configured-link-rate estimate once observed, smoothed so a single outlier is ignored."""

from agent.policies.api import NodeView, TaskInfo
from agent.policies.registry import make_policy
from agent.policies.mdi_exit.agent import TransferDelay

NBYTES = 10000


def view(rates):
    """Worker holding stages 1-3 with a long input queue (own wait 10 x 0.05 s = 0.5 s) and
    neighbours a, b each with one queued task of 0.01 s: Alg. 2 sends to whichever has the
    smaller D_nm + I_m Gamma_m, so the choice shows which D_nm the policy used."""
    peers = ("a", "b")
    return NodeView(node_id="n", role="worker", stage=1, num_stages=3, last_stage=3,
                    peer_stages={m: (1, 3) for m in peers},
                    stage_flops=(1e9, 1e9, 1e9), stage_input_bytes=(1e4, 1e4, 1e4),
                    exit_stages=(1, 2), successors=peers, predecessors=(),
                    link_rate_bytes_s=dict(rates), input_queue=10, output_queue=5,
                    service_time_s=0.05, alive=set(peers),
                    peer_state={m: {"input_queue": 1, "service_time_s": 0.01} for m in peers})


def test_dnm_is_the_configured_link_estimate_until_a_transfer_to_that_neighbour_is_measured():
    p = make_policy("mdi-exit", {1: 0.8, 2: 0.8}, {}, seed=0)
    v = view({"a": 1e6, "b": 1e5})  # configured D: a 0.01 s, b 0.1 s
    task = TaskInfo("t1", 2, NBYTES)
    assert p.choose_successor(task, v) == "a"
    p.on_transfer("b", 0.3, 2 * NBYTES)  # another payload size says nothing about this one
    assert p.choose_successor(task, v) == "a"
    p.on_transfer("a", 0.3, NBYTES)  # a's link is really slow: 0.3 s per task
    assert p.choose_successor(task, v) == "b"
    assert p.transfer_delay.get("a", NBYTES) == 0.3


def test_transfer_delay_ewma_ignores_a_single_outlier():
    d = TransferDelay(smoothing=0.2, outlier_factor=4.0)
    assert d.get("a", NBYTES) is None
    for _ in range(5):
        d.observe("a", 0.01, NBYTES)
    d.observe("a", 2.0, NBYTES)  # one stall
    d.observe("a", 0.01, NBYTES)
    assert d.get("a", NBYTES) == 0.01
    d.observe("a", 0.0001, NBYTES)  # one implausibly fast sample
    d.observe("a", 0.01, NBYTES)
    assert d.get("a", NBYTES) == 0.01


def test_transfer_delay_follows_a_lasting_change_with_each_step_clipped():
    d = TransferDelay(smoothing=0.2, outlier_factor=4.0)
    d.observe("a", 0.01, NBYTES)
    d.observe("a", 1.0, NBYTES)  # first: ignored
    assert d.get("a", NBYTES) == 0.01
    d.observe("a", 1.0, NBYTES)  # second in a row: taken, clipped to 4 x 0.01
    assert abs(d.get("a", NBYTES) - (0.01 + 0.2 * (0.04 - 0.01))) < 1e-12
    for _ in range(60):
        d.observe("a", 1.0, NBYTES)
    assert abs(d.get("a", NBYTES) - 1.0) < 0.01


def test_transfer_delay_drops_negative_and_non_finite_samples():
    d = TransferDelay()
    for bad in (-1.0, float("nan"), float("inf")):
        d.observe("a", bad, NBYTES)
    assert d.get("a", NBYTES) is None



def test_an_estimate_of_zero_still_follows_a_slower_link():
    """A first transfer timed at 0 s must not lock D_nm at 0 (its outlier band would be
    [0, 0]): the estimate leaves 0 and follows a link now taking 5 ms within 60 samples."""
    d = TransferDelay()
    d.observe("a", 0.0, 1000)
    for _ in range(60):
        d.observe("a", 0.005, 1000)
    assert d.get("a", 1000) > 0.004
