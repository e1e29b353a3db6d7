"""AgentMetrics: own registry, 127.0.0.1 endpoint, every listed series; NullMetrics mirrors it."""

import inspect
import urllib.request

from prometheus_client import REGISTRY, CollectorRegistry

from agent.ops.metrics import AgentMetrics, NullMetrics

UPDATES = ["task_in", "task_out", "task_exited", "queue_length", "service_time", "capacity",
           "routing", "threshold", "dropped", "neighbour_alive", "power_mode"]


def _exercise(m):
    m.task_in(2)
    m.task_in(2)
    m.task_out(2)
    m.task_exited(2)
    m.queue_length("inference", 3)
    m.service_time(0.012)
    m.capacity(2.5e9)
    m.routing("w3", 0.4)
    m.threshold(1, 0.85)
    m.dropped("malformed")
    m.neighbour_alive("w3", True)
    m.neighbour_alive("w4", False)
    m.power_mode("MAXN")
    m.power_mode("15W")


def test_endpoint_on_loopback_serves_every_series():
    m = AgentMetrics("w2")
    _exercise(m)
    port = m.serve("127.0.0.1", 0)
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    finally:
        m.close()
    text = text.decode()
    for line in [
        'edge_agent_tasks_in_total{node="w2",stage="2"} 2.0',
        'edge_agent_tasks_out_total{node="w2",stage="2"} 1.0',
        'edge_agent_tasks_exited_total{node="w2",stage="2"} 1.0',
        'edge_agent_queue_length{node="w2",queue="inference"} 3.0',
        'edge_agent_service_time_seconds_count{node="w2"} 1.0',
        'edge_agent_capacity_flops{node="w2"} 2.5e+09',
        'edge_agent_routing_probability{dst="w3",node="w2"} 0.4',
        'edge_agent_exit_threshold{node="w2",stage="1"} 0.85',
        'edge_agent_dropped_frames_total{node="w2",reason="malformed"} 1.0',
        'edge_agent_neighbour_alive{node="w2",peer="w3"} 1.0',
        'edge_agent_neighbour_alive{node="w2",peer="w4"} 0.0',
        'edge_agent_power_mode{mode="MAXN",node="w2"} 0.0',
        'edge_agent_power_mode{mode="15W",node="w2"} 1.0',
    ]:
        assert line in text, line


def test_series_live_on_their_own_registry_not_the_global_one():
    """Two agents in one process (tests, testbed) must not collide on the global registry."""
    a, b = AgentMetrics("a"), AgentMetrics("b")
    a.task_in(1)
    assert a.registry is not b.registry
    assert REGISTRY.get_sample_value("edge_agent_tasks_in_total",
                                     {"node": "a", "stage": "1"}) is None
    reg = CollectorRegistry()
    c = AgentMetrics("c", registry=reg)
    c.capacity(1.0)
    assert reg.get_sample_value("edge_agent_capacity_flops", {"node": "c"}) == 1.0


def test_default_bind_address_is_loopback():
    default = inspect.signature(AgentMetrics.serve).parameters["host"].default
    assert default == "127.0.0.1"


def test_null_metrics_has_the_same_methods_and_does_nothing():
    n = NullMetrics("x")
    for name in UPDATES + ["serve", "close"]:
        assert callable(getattr(n, name)), name
        assert (inspect.signature(getattr(NullMetrics, name)).parameters.keys()
                == inspect.signature(getattr(AgentMetrics, name)).parameters.keys()), name
    _exercise(n)
    assert n.serve() is None


def test_per_task_series_looked_up_once_count_as_the_exported_ones():
    """Rule: the per-task updates (tasks in/out/exited, service time, drops, refusals) keep
    their labelled series after the first call; the exported samples still count every call,
    each label value on its own series, stage given as int or text alike."""
    reg = CollectorRegistry()
    m = AgentMetrics("w", registry=reg)
    # no service-time series before a service time (a source never exports one)
    assert reg.get_sample_value("edge_agent_service_time_seconds_count", {"node": "w"}) is None
    for _ in range(3):
        m.task_in(2)
        m.task_out(2)
        m.task_exited(3)
        m.service_time(0.5)
        m.dropped("deadline")
        m.refused("overload")
    m.task_in("2")
    m.dropped("bad_header")

    def value(name, **labels):
        return reg.get_sample_value(name, dict(node="w", **labels))

    assert value("edge_agent_tasks_in_total", stage="2") == 4.0
    assert value("edge_agent_tasks_out_total", stage="2") == 3.0
    assert value("edge_agent_tasks_exited_total", stage="3") == 3.0
    assert value("edge_agent_tasks_exited_total", stage="2") is None
    assert value("edge_agent_service_time_seconds_count") == 3.0
    assert value("edge_agent_service_time_seconds_sum") == 1.5
    assert value("edge_agent_dropped_frames_total", reason="deadline") == 3.0
    assert value("edge_agent_dropped_frames_total", reason="bad_header") == 1.0
    assert value("edge_agent_tasks_refused_total", reason="overload") == 3.0


def test_a_link_rate_that_lapses_leaves_the_metrics_instead_of_staying_stale():
    """Rule: ``edge_agent_link_rate_bytes_per_second`` (bytes/s, as its name says) holds a
    peer's rate while the agent has an estimate; once the estimate lapses (the agent is back
    on the configured rate) the series goes, as the ``stats.json`` counter does."""
    m = AgentMetrics("w1")
    m.link_rate("w2", 1.5e6)
    labels = {"node": "w1", "peer": "w2"}
    assert m.registry.get_sample_value("edge_agent_link_rate_bytes_per_second", labels) == 1.5e6
    m.link_rate_gone("w2")
    m.link_rate_gone("w3")  # never measured: nothing to remove, no error
    assert m.registry.get_sample_value("edge_agent_link_rate_bytes_per_second", labels) is None


def test_counters_export_no_created_series_that_would_read_as_counts():
    """Rule: no `_created` series (a Unix time the client library adds per counter): a source's
    `edge_agent_source_tasks_created{outcome="created"}` would read as a count of created tasks
    (prometheus-client 0.17 or later can leave them out; 0.16 cannot)."""
    import prometheus_client
    import pytest
    from prometheus_client import generate_latest

    if not hasattr(prometheus_client, "disable_created_metrics"):
        pytest.skip("prometheus-client %s cannot leave the _created series out"
                    % getattr(prometheus_client, "__version__", "< 0.17"))
    m = AgentMetrics("cam")
    m.node_info("source", 0, "dtoee")
    m.source_task("created")
    m.task_in(1)
    text = generate_latest(m.registry).decode()
    assert 'edge_agent_source_tasks_total{node="cam",outcome="created"} 1.0' in text
    assert "_created" not in text.replace('outcome="created"', "")
