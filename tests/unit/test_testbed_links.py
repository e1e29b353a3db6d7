"""The testbed's link columns: utilisation of each shaped link, the senders' rate estimates,
per-rate stats deltas that keep gauges, and counters summed over a worker's processes."""

import json

import pytest

from agent.policies.model import wire_bytes
from agent.testbed.columns import link_utilisation, measured_link_rates
from agent.testbed.columns import stats_delta
from agent.testbed.counters import keep_ended, read_stats, with_ended
from agent.testbed.report import busiest_link, format_table, summarise_records
from agent.testbed.topology import parse_topology
from agent.testbed.topology_bundle import StageInfo

TOPO = {
    "sources": [{"id": "s1", "share": 1.0}],
    "workers": [{"id": "a", "stage": 1, "emulate_capacity_flops": 3e6},
                {"id": "b", "stage": 1, "emulate_capacity_flops": 1e6},
                {"id": "c", "stage": 2, "emulate_capacity_flops": 2e6}],
    "links": [{"from": "s1", "to": "a", "rate_bytes_s": 1e4, "config_rate_bytes_s": 1e6},
              {"from": "s1", "to": "b"},
              {"from": "a", "to": "c", "rate_bytes_s": 1e6},
              {"from": "b", "to": "c", "rate_bytes_s": 1e6}],
}
STAGES = [StageInfo(1e5, 1000.0, True), StageInfo(2e5, 2000.0, False)]


def test_link_utilisation_is_wire_bytes_sent_over_the_time_sent_and_real_rate():
    """rho(a->b) = sent_to_b x wire bytes of b's stage input / the time they were sent in
    (``sending_s``) / the real (shaped) rate, not the configured one; unshaped links and
    senders without stats are left out."""
    topo = parse_topology(TOPO)
    stats = {"s1": {"counters": {"sent_to_a": 50, "sent_to_b": 10}}, "a": None,
             "b": {"counters": {"sent_to_c": 100}}}
    got = link_utilisation(topo, STAGES, stats, 10.0)
    assert set(got) == {"s1->a", "b->c"}
    assert got["s1->a"] == pytest.approx(50 * float(wire_bytes(1000.0)) / 10.0 / 1e4)
    assert got["b->c"] == pytest.approx(100 * float(wire_bytes(2000.0)) / 10.0 / 1e6)
    assert link_utilisation(topo, STAGES, stats, 0.0) == {}


def test_measured_link_rates_come_from_the_senders_gauges():
    """Each sender's link_rate_bytes_s_<peer> counter is its estimate of that link."""
    topo = parse_topology(TOPO)
    stats = {"s1": {"counters": {"link_rate_bytes_s_a": 9500, "link_rate_bytes_s_b": 0}}}
    assert measured_link_rates(topo, stats) == {"s1->a": 9500.0}


def test_stats_delta_subtracts_counters_but_keeps_link_rate_gauges():
    """A rate's run is the counters' difference, but a measured link rate is a level: the
    last value stands (subtracting two estimates gives nonsense)."""
    before = {"a": {"counters": {"sent_to_c": 40, "link_rate_bytes_s_c": 9000}}}
    after = {"a": {"counters": {"sent_to_c": 100, "link_rate_bytes_s_c": 9500}}, "b": None}
    d = stats_delta(before, after)
    assert d["a"]["counters"] == {"sent_to_c": 60, "link_rate_bytes_s_c": 9500}
    assert d["b"] is None


def test_a_counter_lower_than_before_is_the_new_processs_count_never_a_negative_share():
    """A running total below its earlier reading means its counters started again from zero
    in a process the testbed did not end: the rate's share is the new count, not negative."""
    before = {"a": {"counters": {"tasks_in": 40, "sent_to_c": 40}}}
    after = {"a": {"counters": {"tasks_in": 6, "sent_to_c": 45}}}
    assert stats_delta(before, after)["a"]["counters"] == {"tasks_in": 6, "sent_to_c": 5}


def test_a_workers_counters_add_its_ended_processes_but_keep_the_running_ones_gauges(
        tmp_path):
    """The stats a rate reads of a worker are running totals over its processes: the last
    stats.json of each ended process (moved aside, so it is never read twice) plus the running
    one's; gauges and routing are the running process's, or the ended one's where it has none
    yet."""
    ended = {}
    state = tmp_path / "w1"
    state.mkdir()
    (state / "stats.json").write_text(json.dumps({"counters": {
        "tasks_in": 30, "sent_to_c": 30, "link_rate_bytes_s_c": 9000}, "routing": {"c": 1.0}}))
    keep_ended(ended, "w1", str(state), 4242)
    assert not (state / "stats.json").exists() and (state / "stats.4242.json").exists()
    assert with_ended(read_stats(str(state / "stats.json")), ended.get("w1")) == ended["w1"]
    (state / "stats.json").write_text(json.dumps({"counters": {
        "tasks_in": 5, "sent_to_d": 5, "link_rate_bytes_s_c": 9500}, "routing": {"d": 1.0}}))
    now = with_ended(read_stats(str(state / "stats.json")), ended["w1"])
    assert now["counters"] == {"tasks_in": 35, "sent_to_c": 30, "sent_to_d": 5,
                               "link_rate_bytes_s_c": 9500}
    assert now["routing"] == {"d": 1.0}
    assert with_ended(None, None) is None


def test_table_shows_the_busiest_link_only_when_links_are_shaped():
    """The table gains a "link util" column naming the busiest link when a run measured one."""
    r = summarise_records([], "cf", 5.0, True, expected_created=0)
    assert "link util" not in format_table([r])
    r.link_utilisation = {"s1->a": 0.31, "b->c": 0.62}
    assert busiest_link(r.link_utilisation) == "0.62 b->c"
    text = format_table([r])
    assert "link util" in text.splitlines()[0] and "0.62 b->c" in text
    assert busiest_link({}) == "-"


def test_target_resumed_is_the_first_answer_from_the_worker_after_the_faults_end():
    """Tasks flow through a worker again when it next answers one: seconds from the fault's
    end to its first completed task finished after it; None when it never answers again."""
    from agent.testbed.phases import target_resumed
    recs = [{"worker": "w1a", "status": "completed", "finished_mono": 9.0},
            {"worker": "w1a", "status": "lost", "finished_mono": 10.5},
            {"worker": "w1b", "status": "completed", "finished_mono": 10.2},
            {"worker": "w1a", "status": "completed", "finished_mono": 11.5},
            {"worker": "w1a", "status": "completed", "finished_mono": 12.0}]
    assert target_resumed(recs, "w1a", 10.0) == pytest.approx(1.5)
    assert target_resumed(recs, "w2a", 10.0) is None
