"""Series whose label values a node config fixes are exported at 0 from start-up.

Prometheus takes a series that first appears at N as its first sample: ``rate()`` and
``increase()`` never count those N, so a burst of refusals or failed writes that comes and
stops before the series exists never shows in an alert on ``increase(...) > 0``. The
endpoint ``serve_metrics`` starts for a node config (the one ``run`` serves) is scraped here
over real HTTP on loopback.
"""

from __future__ import annotations

import urllib.request
from typing import Dict, Tuple

from prometheus_client.parser import text_string_to_metric_families

from agent.config.node import NodeConfig
from agent.ops.metrics import serve_metrics
from agent.ops.metrics_server import url
from agent.testbed.ports import free_ports

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def _config(**kw) -> NodeConfig:
    base = dict(node_id="n1", role="worker", stage=2, bundle="b", state_dir="s",
                control_bind="tcp://127.0.0.1:7000", data_bind="tcp://127.0.0.1:7001",
                metrics_port=free_ports(1)[0])
    base.update(kw)
    return NodeConfig(**base)


def _scrape(port: int) -> Samples:
    """{(sample name, sorted labels without node): value} of the endpoint on ``port``."""
    with urllib.request.urlopen(url("127.0.0.1", port), timeout=10) as r:
        text = r.read().decode("utf-8")
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "node"))
            out[(s.name, labels)] = s.value
    return out


def test_a_workers_task_refusal_and_write_failure_counts_are_served_at_zero_from_start():
    """Rule: a worker serving stages 2..3 exports, before any task, its tasks in/out/exited
    for each stage it serves, its refusals by each reason it can give (overload, no_route,
    shutdown), its failed state writes and its service-time histogram, all at 0; a source's
    own reasons and writes (admission, records) are not among them; the first count then
    moves the same series to 1."""
    m = serve_metrics(_config(last_stage=3))
    try:
        got = _scrape(m.port)
        for stage in ("2", "3"):
            for name in ("in", "out", "exited"):
                assert got[("edge_agent_tasks_%s_total" % name, (("stage", stage),))] == 0.0
        for reason in ("overload", "no_route", "shutdown"):
            assert got[("edge_agent_tasks_refused_total", (("reason", reason),))] == 0.0
        assert got[("edge_agent_write_failures_total", (("what", "state"),))] == 0.0
        assert got[("edge_agent_service_time_seconds_count", ())] == 0.0
        assert ("edge_agent_tasks_refused_total", (("reason", "admission"),)) not in got
        assert ("edge_agent_write_failures_total", (("what", "records"),)) not in got
        assert ("edge_agent_client_refused_total", ()) not in got
        m.refused("overload")
        m.task_in(3)
        m.write_failed("state")
        got = _scrape(m.port)
        assert got[("edge_agent_tasks_refused_total", (("reason", "overload"),))] == 1.0
        assert got[("edge_agent_tasks_in_total", (("stage", "3"),))] == 1.0
        assert got[("edge_agent_write_failures_total", (("what", "state"),))] == 1.0
    finally:
        m.close()


def test_a_client_sources_rejections_write_failures_and_refused_clients_are_served_at_zero():
    """Rule: a source taking clients exports, before any task, its rejections by each reason
    (admission, overload, no_route, shutdown), its failed writes of records, journal, rotation
    and state, and its refused clients, all at 0; no per-stage task series (a source runs no
    stage)."""
    m = serve_metrics(_config(role="source", stage=0, arrival="client",
                              client_bind="tcp://127.0.0.1:7002"))
    try:
        got = _scrape(m.port)
        for reason in ("admission", "overload", "no_route", "shutdown"):
            assert got[("edge_agent_tasks_refused_total", (("reason", reason),))] == 0.0
        for what in ("records", "journal", "rotation", "state"):
            assert got[("edge_agent_write_failures_total", (("what", what),))] == 0.0
        assert got[("edge_agent_client_refused_total", ())] == 0.0
        assert not [k for k in got if k[0].startswith("edge_agent_tasks_in")]
        assert not [k for k in got if k[0].startswith("edge_agent_service_time")]
    finally:
        m.close()


def test_a_poisson_source_has_no_refused_clients_series():
    """Rule: a source without a client endpoint (arrival = "poisson") exports no refused-
    clients count: it has no clients to refuse."""
    m = serve_metrics(_config(role="source", stage=0))
    try:
        got = _scrape(m.port)
        assert ("edge_agent_client_refused_total", ()) not in got
        assert got[("edge_agent_tasks_refused_total", (("reason", "admission"),))] == 0.0
    finally:
        m.close()


def test_null_metrics_has_every_public_method_of_agent_metrics():
    """Rule: ``NullMetrics`` stands in for ``AgentMetrics`` wherever metrics are off, so it has
    each of its public methods with the same parameters."""
    import inspect

    from agent.ops.metrics import AgentMetrics, NullMetrics

    for name, fn in inspect.getmembers(AgentMetrics, inspect.isfunction):
        if not name.startswith("_"):
            assert (inspect.signature(getattr(NullMetrics, name)).parameters.keys()
                    == inspect.signature(fn).parameters.keys()), name


def test_the_refusals_help_text_names_every_reason_a_worker_or_source_gives():
    """Rule: the HELP line of ``edge_agent_tasks_refused_total`` names each reason its
    ``reason`` label takes, ``shutdown`` (a stopping worker or source) included."""
    from prometheus_client import generate_latest

    from agent.ops.metrics import AgentMetrics

    text = generate_latest(AgentMetrics("n1").registry).decode("utf-8")
    help_line = next(line for line in text.splitlines()
                     if line.startswith("# HELP edge_agent_tasks_refused_total "))
    assert help_line.endswith("Tasks refused to their sender (overload, no_route, shutdown) or "
                              "rejected at a source (admission, overload, no_route, shutdown)")


def test_the_metrics_server_queues_as_many_connections_as_it_serves_at_once():
    """Rule: the listen backlog holds ``MAX_REQUESTS`` connections (socketserver's default of 5
    made a burst of a dozen scrapes wait on TCP retries, a second or more)."""
    from agent.ops.metrics_server import MAX_REQUESTS, _Server
    assert _Server.request_queue_size == MAX_REQUESTS
