"""What a run prints about its links says what each network mode really applies.

On loopback the senders pace each link at the rate their node config gives it
(``config_rate_bytes_s`` when the topology sets one), not at ``rate_bytes_s``: the shipped
slow-link-unconfigured topology was printed as "4.17e+04..1.6e+06 bytes/s" while every sender
paced at 1.6e6 or 8e5. Under netns a link between two agents of one device runs over that
device's loopback and is not shaped: it was counted among the links "shaped in the kernel"."""

from __future__ import annotations

from agent.testbed.local import node_objects
from agent.testbed.asrun import one_device_links
from agent.testbed.netns import plan_network
from agent.testbed.runtopo import link_lines
from agent.testbed.topology import load_topology, parse_topology


def _paced_rates(topo):
    """{"a->b": bytes/s} each sender paces a topology link at on loopback, from the node
    configs the testbed writes."""
    ids = topo.node_ids()
    ends = {n: "tcp://127.0.0.1:%d" % (20000 + i) for i, n in enumerate(ids)}
    objs = node_objects(topo, "b", "cf", 10.0, 5.0, "/tmp/x", ends, ends, paced=True)
    out = {}
    for l in topo.links:
        assert objs[l.src]["emulate_links"] is True
        peer = [p for p in objs[l.src]["peers"] if p["id"] == l.dst][0]
        out["%s->%s" % (l.src, l.dst)] = peer["link_rate_bytes_s"]
    return out


def test_loopback_prints_the_rates_the_senders_pace_at_and_names_the_links_told_otherwise():
    """Rule: on loopback the "emulated:" range is that of the rates in the agents' configs, and
    a network line names each link paced at its config_rate_bytes_s instead of its
    rate_bytes_s, with both rates."""
    topo = load_topology("slow-link-unconfigured")
    paced = _paced_rates(topo)
    assert paced["cam1->w1a"] == 1.6e6  # not the topology's 4.17e4
    emulated, lines = link_lines(topo)
    assert "16/16 links emulated (%.3g..%.3g bytes/s)" % (min(paced.values()),
                                                         max(paced.values())) in emulated
    assert lines == ["network: loopback; the senders pace these links at the config_rate_bytes_s "
                     "their agents are told, not at their rate_bytes_s (applied with --network "
                     "netns only): cam1->w1a 1.6e+06 bytes/s (not 41700), cam2->w1a 1.6e+06 "
                     "bytes/s (not 41700)"]


def test_loopback_says_nothing_more_when_every_link_is_paced_at_its_rate():
    """Rule: a topology without config_rate_bytes_s prints its rate_bytes_s range as before,
    and no network line."""
    topo = load_topology("slow-link")
    emulated, lines = link_lines(topo)
    assert "16/16 links emulated (4.17e+04..1.6e+06 bytes/s)" in emulated and lines == []


def _one_box():
    """cam and w1 share host "box"; their link has a rate, delay and loss the kernel never
    applies (one namespace)."""
    return parse_topology({
        "sources": [{"id": "cam", "share": 1.0, "host": "box"}],
        "workers": [{"id": "w1", "stage": 1, "host": "box"}, {"id": "w2", "stage": 1},
                    {"id": "w3", "stage": 2}],
        "links": [{"from": "cam", "to": "w1", "rate_bytes_s": 5e4, "delay_ms": 5},
                  {"from": "cam", "to": "w2", "rate_bytes_s": 2e5},
                  {"from": "w1", "to": "w3", "rate_bytes_s": 1e6},
                  {"from": "w2", "to": "w3"}]})


def test_netns_does_not_count_a_link_inside_one_device_as_shaped():
    """Rule: under netns the plan shapes no link between agents of one device, the printed
    count and range leave it out, and a network line names it with its host."""
    topo = _one_box()
    plan = plan_network(topo, prefix="eatb1")
    inside = one_device_links(topo, plan)
    assert [(l.src, l.dst) for l in inside] == [("cam", "w1")]
    assert len(plan.shaped) == 4 and all(s.src != s.dst for s in plan.shaped)
    emulated, lines = link_lines(topo, plan)
    assert "2/4 links shaped in the kernel (2e+05..1e+06 bytes/s)" in emulated
    assert lines == ["network: netns, 3 devices (namespaces eatb1-*), 4 directed links shaped "
                     "in the kernel",
                     "network: not shaped (agents of one device talk over its loopback): "
                     "cam->w1 (host box)"]


def test_the_same_topology_on_loopback_paces_the_one_device_link():
    """Rule: on loopback host changes nothing: the link inside "box" is paced like any other
    (its delay_ms is named as netns-only)."""
    emulated, lines = link_lines(_one_box())
    assert "3/4 links emulated (5e+04..1e+06 bytes/s)" in emulated
    assert lines == ["network: loopback; the links' delay_ms and loss apply with --network "
                     "netns only"]


def test_link_utilisation_is_over_the_rate_the_link_was_run_at():
    """Rule: the link utilisation column divides a link's bytes by the rate the run applied
    (``applied_links``: on loopback the config_rate_bytes_s its sender paced at), so the same
    bytes on slow-link-unconfigured's cam1->w1a read as 1.6e6 bytes/s of load, not 41.7 kB/s."""
    from agent.testbed.columns import link_utilisation
    from agent.testbed.driver import load_bundle_for
    from agent.testbed.local import bundle_stages
    from agent.testbed.asrun import applied_links

    topo = load_topology("slow-link-unconfigured")
    stages = bundle_stages(load_bundle_for(topo))
    stats = {"cam1": {"counters": {"sent_to_w1a": 100}}}
    told = link_utilisation(topo, stages, stats, 10.0)["cam1->w1a"]
    run = link_utilisation(applied_links(topo), stages, stats, 10.0)["cam1->w1a"]
    assert abs(run / told - 41700.0 / 1.6e6) < 1e-9
