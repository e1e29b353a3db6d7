"""Measured link rates: each sender estimates its links' rates from its own transfers (wire
bytes from link start to ACK) and plans with the estimate once it has enough samples; the
configured rate is the prior. Emulated links pace the wire bytes, framing included."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.net.links import MIN_SAMPLES, LinkRates, message_wire_bytes
from agent.net.transport import Transport
from agent.node.build import build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.policies.baselines.agent import BaselinePolicy
from agent.policies.model import wire_bytes
from agent.protocol.wire import Kind
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.endpoints import loopback_endpoints

EP = loopback_endpoints((5641, 5642, 5651, 5652, 5653, 5654))  # free ports

TENSOR = 3136  # bytes of the demo image


def _link(rates: LinkRates, peer: str, rate_bytes_s: float, n: int, t0: float = 0.0,
          gap_s: float = 0.0) -> float:
    """``n`` transfers over a FIFO link of ``rate_bytes_s``, each sent ``gap_s`` after the
    previous one (0: back to back); returns the time of the last ACK."""
    free = t0
    send = t0
    for _ in range(n):
        nbytes = message_wire_bytes(TENSOR)
        free = max(send, free) + nbytes / rate_bytes_s
        rates.observe(peer, send, free + 0.0005, nbytes)  # ACK back 0.5 ms later
        send += gap_s
    return free


def test_the_configured_rate_is_the_prior_until_enough_transfers():
    """Before MIN_SAMPLES transfers the rate to plan with is the configured one."""
    rates = LinkRates({"w1": 1e6})
    _link(rates, "w1", 41700.0, MIN_SAMPLES - 1)
    assert rates.estimate("w1") is None and rates.rate("w1") == 1e6


def test_a_link_slower_than_configured_is_seen_within_a_few_seconds():
    """A 41.7 KB/s link configured at 1 MB/s, tasks queued back to back: after MIN_SAMPLES
    queued transfers (under a second of traffic) the estimate is within 5% of the real rate."""
    rates = LinkRates({"w1": 1e6})
    end = _link(rates, "w1", 41700.0, MIN_SAMPLES + 1)
    assert end < 3.0
    assert rates.rate("w1") == pytest.approx(41700.0, rel=0.05)


def test_idle_transfers_keep_the_prior_unless_they_prove_the_link_faster():
    """Transfers that find the link idle include the ACK's way back: on a link slower than
    configured they only bound its rate from below, so the prior stands; on one faster than
    configured that bound replaces the prior."""
    slow = LinkRates({"w1": 1e6})
    _link(slow, "w1", 41700.0, 20, gap_s=0.5)
    assert slow.rate("w1") == 1e6
    fast = LinkRates({"w1": 1e4})
    _link(fast, "w1", 41700.0, 20, gap_s=0.5)
    assert 1e4 < fast.rate("w1") <= 41700.0


def test_the_ack_latency_does_not_bias_queued_transfers():
    """Back to back, a 20 ms ACK latency (a busy receiver) cancels between consecutive ACKs:
    a 1.6 MB/s link reads 1.6 MB/s, not the few hundred KB/s of bytes over start-to-ACK."""
    rates = LinkRates({"w1": 1e5})
    t, free = 0.0, 0.0
    for _ in range(30):
        nbytes = message_wire_bytes(TENSOR)
        free = max(t, free) + nbytes / 1.6e6
        rates.observe("w1", t, free + 0.02, nbytes)
        t += 0.5 * nbytes / 1.6e6  # offered at twice the link's rate: it queues
    assert rates.rate("w1") == pytest.approx(1.6e6, rel=0.05)


def test_a_link_that_slows_down_is_followed():
    """After a rate change the estimate follows within a few dozen transfers."""
    rates = LinkRates({"w1": 1e6})
    end = _link(rates, "w1", 200000.0, 50)
    _link(rates, "w1", 50000.0, 40, t0=end)
    assert rates.rate("w1") == pytest.approx(50000.0, rel=0.1)


@pytest.fixture
def outbox(tmp_path):
    cfg = parse_config({
        "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
        "control_bind": EP[5641], "data_bind": EP[5642],
        "emulate_links": True,
        "peers": [{"id": "w1", "stage": 1, "control_address": EP[5651],
                   "data_address": EP[5652], "link_rate_bytes_s": 1e6},
                  {"id": "w2", "stage": 1, "control_address": EP[5653],
                   "data_address": EP[5654], "link_rate_bytes_s": 1e6}]})
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    view.alive.update({"w1", "w2"})
    policy = BaselinePolicy("bf", {}, {}, 0)
    yield Outbox(cfg, transport, policy, view, Capacity()), policy
    transport.close()
    ctx.term()


def test_acked_transfers_put_the_estimate_in_the_view_stats_and_bf(outbox):
    """The outbox feeds each first-send ACK to the link's estimator; once it has an estimate,
    the view's link rate (what DTO-EE and BF plan with) and the stats counter show it."""
    out, policy = outbox
    x = np.zeros(TENSOR, dtype=np.uint8)
    t = 100.0
    for i in range(MIN_SAMPLES + 1):  # queued back to back: every ACK after the first
        item = OutItem(Kind.TASK, "k%d" % i, {}, x, dest="w1", link_start=t)
        out.items[item.key] = item
        t += message_wire_bytes(TENSOR) / 41700.0
        out.on_ack("w1", [item.key], t + 1e-6)
    assert out.view.link_rate_bytes_s["w1"] == pytest.approx(41700.0, rel=1e-6)
    assert out.view.link_rate_bytes_s["w2"] == 1e6  # no transfers: the configured prior
    assert out.counters["link_rate_bytes_s_w1"] == int(out.view.link_rate_bytes_s["w1"])
    w = policy.weights(out.view)
    assert w["w1"] < 0.05 * w["w2"]


def test_emulated_links_pace_the_wire_bytes(outbox):
    """The sender's pacing charges a message its wire bytes (header, framing, TCP/IP), the
    same bytes the model's link term counts."""
    out, _ = outbox
    x = np.zeros(TENSOR, dtype=np.uint8)
    item = OutItem(Kind.TASK, "k", {"id": "t", "source": "s1", "stage": 1, "attempt": 0,
                                    "created": 0.0, "hops": 0, "resends": 0, "token": "0" * 16},
                   x)
    out.send(item, 50.0)
    due = out._paced[0][0]
    assert due - 50.0 == pytest.approx(float(wire_bytes(TENSOR)) / 1e6)
    assert wire_bytes(TENSOR) > 1.1 * TENSOR


def test_a_paced_task_carries_what_is_left_of_its_deadline_when_it_leaves(outbox):
    """On an emulated link a task waits for its slot here: its ``ttl_s`` is counted from when
    it leaves, so the next hop does not keep it past its source's deadline (a re-issue then
    met a live original, dropped as a duplicate)."""
    from agent.protocol import wire

    out, _ = outbox
    x = np.zeros(TENSOR, dtype=np.uint8)
    for i in range(5):  # queued back to back on one link: each leaves one transfer later
        out.send(OutItem(Kind.TASK, "k%d" % i, {"id": "t%d" % i, "source": "s1", "stage": 1,
                                                "attempt": 0, "created": 0.0, "hops": 0,
                                                "resends": 0, "token": "0" * 16},
                         x, expires=60.0), 50.0)
    paced = sorted(out._paced, key=lambda e: e[0])
    assert paced[-1][0] > 50.001  # the last one leaves well after it was handed over
    for due, _, item, frames in paced:
        assert wire.decode(frames).fields["ttl_s"] == pytest.approx(item.expires - due)


def test_transfers_acknowledged_together_do_not_make_a_slow_link_look_fast():
    """A receiver that reads two messages in one poll acknowledges them in one ACK message:
    the second (queued behind the first) has no interval of its own and must not count as
    bytes in zero seconds. Bursts of three images on an idle 41.7 KB/s link, the first two
    acknowledged together: the estimate is the link's rate (it read 2x with zero-length
    intervals counted)."""
    rates = LinkRates({"w1": 1e6})
    t = 0.0
    nbytes = message_wire_bytes(TENSOR)
    per_s = nbytes / 41700.0
    for _ in range(20):
        ack12 = t + 2 * per_s + 0.005  # the receiver polls once both are in
        rates.observe("w1", t, ack12, nbytes)
        rates.observe("w1", t, ack12, nbytes)
        rates.observe("w1", t, t + 3 * per_s + 0.005, nbytes)
        t += 2.0
    assert rates.rate("w1") == pytest.approx(41700.0, rel=0.05)


def _bunched(rate_bytes_s: float, load: float, poll_s: float, jitter_s: float,
             apart_s: float = 0.0, n: int = 300, seed: int = 1) -> float:
    """The estimate after ``n`` Poisson transfers at ``load`` of a FIFO link whose receiver
    reads every ``poll_s`` and acknowledges what it read together (one ACK message, or one per
    transfer ``apart_s`` apart), seen by a sender whose loop adds up to ``jitter_s``."""
    rnd = np.random.default_rng(seed)
    nbytes = message_wire_bytes(TENSOR)
    per_s = nbytes / rate_bytes_s
    t, free, seen_last, poll_last = 0.0, 0.0, 0.0, -1.0
    rates = LinkRates({"w1": 1.6e6})
    for _ in range(n):
        t += rnd.exponential(per_s / load)
        free = max(free, t) + per_s
        poll = (int(free / poll_s) + 1) * poll_s
        seen = max(seen_last, poll + 0.0005 + rnd.uniform(0.0, jitter_s))
        if poll == poll_last:
            seen = seen_last + apart_s  # read in the same poll as the one before
        rates.observe("w1", t, seen, nbytes)
        seen_last, poll_last = seen, poll
    return rates.rate("w1") / rate_bytes_s


@pytest.mark.parametrize("load", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("apart_s", [0.0, 0.0003])
def test_a_slow_link_reads_its_rate_when_acks_come_in_bunches(load, apart_s):
    """A 41.7 KB/s link configured at 1.6 MB/s, light to heavy load; the receiver polls every
    30 ms and acknowledges what it read in one ACK message (or in several 0.3 ms apart), the
    sender's loop sees each ACK up to 20 ms late: the estimate is within 10% of the rate."""
    assert _bunched(41700.0, load, 0.03, 0.02, apart_s) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("jitter_s", [0.02, 0.06])
def test_a_fast_link_whose_acks_lag_is_not_read_as_its_offered_load(jitter_s):
    """A 1.6 MB/s link carries an image in 2.2 ms; a busy receiver acknowledges 0.5 ms to
    20-60 ms later (in order), so most transfers start before the previous ACK and the gaps
    between ACKs are the gaps between sends: read as queued intervals they made the link
    look 5-10x slower. A transfer seen going faster than that refutes them: the prior stands."""
    got = _bunched(1.6e6, 0.02, 1e-9, jitter_s)
    assert got == 1.0


def test_a_transfer_faster_than_the_estimate_withdraws_it_from_the_view(outbox):
    """Queued transfers set a 41.7 KB/s estimate in the view; one message then ACKed 1 ms
    after its start shows the link carries at least 3.6 MB/s, so the estimate is not backed by
    the link any more: the view and the stats go back to the configured rate."""
    out, _ = outbox
    x = np.zeros(TENSOR, dtype=np.uint8)
    t = 100.0
    for i in range(MIN_SAMPLES + 1):
        item = OutItem(Kind.TASK, "k%d" % i, {}, x, dest="w1", link_start=t)
        out.items[item.key] = item
        t += message_wire_bytes(TENSOR) / 41700.0
        out.on_ack("w1", [item.key], t + 1e-6)
    assert out.view.link_rate_bytes_s["w1"] == pytest.approx(41700.0, rel=1e-6)
    t += 0.5
    item = OutItem(Kind.TASK, "fast", {}, x, dest="w1", link_start=t)
    out.items[item.key] = item
    out.on_ack("w1", [item.key], t + 0.001)
    assert out.view.link_rate_bytes_s["w1"] == 1e6
    assert "link_rate_bytes_s_w1" not in out.counters


def test_rates_measured_before_a_restart_are_the_priors_after_it(outbox, tmp_path):
    """A sender saves its links' estimates with its state; restarted, it plans with them (view
    and prior) instead of the configured rate, until new transfers measure again. Rates for
    unknown peers and bad values are not restored, and a saved table that is not rates > 0
    makes the whole state unusable (check_state)."""
    from agent.node.build import restore_link_rates
    from agent.ops.state import LINK_RATES_KEY, StateStore, check_state

    out, _policy = outbox
    store = StateStore(str(tmp_path / "st"))
    store.save({"policy": "bf", LINK_RATES_KEY: {"w1": 41700.0, "gone": 5.0}})
    restore_link_rates(out, store.load())
    assert out.view.link_rate_bytes_s == {"w1": 41700.0, "w2": 1e6}
    assert out.link_rates.rate("w1") == 41700.0 and out.link_rates.estimate("w1") is None
    restore_link_rates(out, {LINK_RATES_KEY: {"w2": "fast"}})
    restore_link_rates(out, None)
    assert out.view.link_rate_bytes_s["w2"] == 1e6
    for bad in ({"w1": -1.0}, {"w1": True}, [41700.0]):
        with pytest.raises(ValueError, match=LINK_RATES_KEY):
            check_state({LINK_RATES_KEY: bad})


def test_fastest_recent_is_the_largest_rate_acked_within_the_window():
    """The sliding-window maximum gives what a scan of the last RECENT_S of transfers would."""
    from agent.net.links import RECENT_S

    rng = np.random.default_rng(3)
    rates, seen, t = LinkRates({"w": 1e6}), [], 0.0
    for _ in range(3000):
        t += float(rng.exponential(0.01))
        dur = float(rng.uniform(1e-4, 0.05))
        start = t - dur
        rates.observe("w", start, t, 4000.0)
        seen.append((t, 4000.0 / (t - start)))
        want = max(r for a, r in seen if a >= t - RECENT_S)
        assert rates.fastest_recent("w") == want


@pytest.mark.parametrize("gap_s", [5e-6, 5e-5, 2e-4])
def test_separate_acks_close_together_keep_their_time(gap_s):
    """Only transfers acknowledged in one ACK message (one ACK time) join a sample: separate
    ACK messages, however close (a saturated fast link, ACKs 5-200 us apart for 20,000
    transfers), each add their interval, so the estimate stays the link's rate (it grew
    without bound when ACKs under 0.1 ms apart all joined one zero-length chain: 1e12 bytes/s
    after 100 ACKs, then infinite)."""
    rates, t, nbytes = LinkRates({"w1": 1e6}), 0.0, 1000.0
    for _ in range(20000):
        start = t - 4 * gap_s  # sent while earlier transfers were still unacknowledged
        t += gap_s
        rates.observe("w1", start, t, nbytes)
    assert rates.estimate("w1") == pytest.approx(nbytes / gap_s, rel=0.05)


@pytest.mark.parametrize("keys", [1, 10, 128])
def test_one_ack_message_of_many_keys_reads_the_bytes_its_interval_carried(keys):
    """A busy link whose receiver acknowledges ``keys`` transfers in each ACK message (every
    10 ms, all sent before the previous ACK): the estimate is the bytes per second the link
    carried, whatever the batch (decaying the one interval once per key read 8x at 32 keys)."""
    rates, ack, nbytes = LinkRates({"w1": 1e7}), 0.0, message_wire_bytes(TENSOR)
    for _ in range(100):
        ack += 0.010
        for _ in range(keys):
            rates.observe("w1", ack - 0.015, ack, nbytes)
    assert rates.estimate("w1") == pytest.approx(keys * nbytes / 0.010, rel=1e-6)


def test_an_ack_of_thousands_of_keys_leaves_a_finite_rate_in_the_view(outbox):
    """A receiver that stalled and then acknowledges 7,000 transfers at once: the outbox takes
    the ACK without an error and plans with a finite rate (it overflowed to inf, the stats
    counter's int() raised, and BF's weights were no longer finite)."""
    out, policy = outbox
    x = np.zeros(TENSOR, dtype=np.uint8)
    for i in range(MIN_SAMPLES):  # a measured link first
        item = OutItem(Kind.TASK, "a%d" % i, {}, x, dest="w1", link_start=100.0 + 0.1 * i)
        out.items[item.key] = item
        out.on_ack("w1", [item.key], 100.0 + 0.1 * i + 0.09)
    keys = []
    for i in range(7000):
        item = OutItem(Kind.TASK, "b%d" % i, {}, x, dest="w1", link_start=110.0)
        out.items[item.key] = item
        keys.append(item.key)
    out.on_ack("w1", keys, 170.0)
    assert not out.items and 0 < out.view.link_rate_bytes_s["w1"] < 1e9
    assert all(np.isfinite(v) for v in policy.weights(out.view).values())
