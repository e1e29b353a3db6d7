"""Prometheus metrics of one agent, on its own registry and its own small HTTP endpoint.

Every series carries a ``node`` label so that several agents on one box (or one scrape job over
a fleet) stay apart. The endpoint binds 127.0.0.1 by default and has neither TLS nor
authentication: a ``metrics_host`` that is not a loopback address is refused at start-up unless
the config also says ``metrics_public = true`` (then the agent logs a warning), see
``agent.config.checks.is_loopback_host``. ``NullMetrics`` has the same methods and does nothing, for agents run
without an endpoint and for tests. The counts whose label values a node config fixes (refusal
reasons, a worker's stages, ...) are served at 0 from start-up: ``AgentMetrics.known_series``;
``edge_agent_node_state`` says where the node is in its life (``NODE_STATES``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Iterable, Optional, Set, Tuple

from agent.ops.metrics_null import NullMetrics as NullMetrics  # its callers import it here
from agent.ops.metrics_server import serve_fault, start, stop, url
from engines.accelerator import FALLBACK_REASONS

log = logging.getLogger(__name__)

SOURCE_OUTCOMES = ("created", "completed", "lost", "rejected")  # edge_agent_source_tasks_total
# Refusal reasons (edge_agent_tasks_refused_total) a worker gives (agent.node.worker_admit),
# and those a source rejects a new task for (agent.node.source_refusal; admission: its policy).
WORKER_REFUSALS = ("overload", "no_route", "shutdown")
SOURCE_REJECTIONS = ("admission",) + WORKER_REFUSALS
# Failed writes (edge_agent_write_failures_total): every agent saves its state; a source also
# writes its records and their journal, and rotates the records.
SOURCE_WRITES = ("records", "journal", "rotation")
# Drop reasons (edge_agent_dropped_frames_total): those of the wire protocol and of the loop
# and outbox every agent runs, then a worker's and a source's own (agent.node.worker*,
# agent.node.inference, agent.node.source); tests/unit/test_metrics_drop_reasons.py checks
# that every reason the code gives is among them.
DROP_REASONS = ("empty", "bad_header", "bad_version", "bad_kind", "bad_field", "bad_tensor",
                "bad_topic", "oversized", "unexpected_kind", "unknown_sender", "bad_heartbeat",
                "bad_payload", "impersonation", "stale_connection", "handler_error", "deadline",
                "undeliverable")
WORKER_DROPS = ("wrong_stage", "unknown_source", "bad_shape", "bad_attempt", "source_gone",
                "engine_error", "unknown_stage", "no_output", "bad_output", "no_input")
SOURCE_DROPS = ("bad_shape", "bad_input", "revoked_client", "foreign_result", "forged_result")
# edge_agent_node_state, in life order: the endpoint serves from right after the state
# directory's lock (agent.ops.metrics_start), the engines still to load; serving once the
# sockets are bound; draining from SIGTERM/SIGINT until the process ends
NODE_STATES = ("starting", "serving", "draining")
WARNING_LABEL_CHARS = 160  # the newest warning is shown cut to this many characters

# Service times of one stage on a Jetson span ~1 ms (small stage, GPU) to seconds (TX2, CPU).
SERVICE_TIME_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0)


class AgentMetrics:
    """The agent's series; update methods are cheap and safe to call from any thread."""

    def __init__(self, node_id: str, registry=None) -> None:
        import prometheus_client as pc  # each counter's `_created` series, a Unix time named
        getattr(pc, "disable_created_metrics", lambda: None)()  # like a count: left out (0.17+)
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.node_id = str(node_id)
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self._tasks_in = Counter("edge_agent_tasks_in", "Tasks received for a stage",
                                 ["node", "stage"], registry=r)
        self._tasks_out = Counter("edge_agent_tasks_out", "Tasks handed on to the next stage "
                                  "(sent, or held for a successor)", ["node", "stage"], registry=r)
        self._tasks_exited = Counter("edge_agent_tasks_exited",
                                     "Tasks that left at this stage's exit head",
                                     ["node", "stage"], registry=r)
        self._queue = Gauge("edge_agent_queue_length", "Tasks waiting in a queue",
                            ["node", "queue"], registry=r)
        self._service = Histogram("edge_agent_service_time_seconds",
                                  "Engine service time per task", ["node"],
                                  buckets=SERVICE_TIME_BUCKETS_S, registry=r)
        self._capacity = Gauge("edge_agent_capacity_flops",
                               "Capacity estimate mu of this worker (FLOP/s)", ["node"],
                               registry=r)
        self._routing = Gauge("edge_agent_routing_probability",
                              "Routing probability p_ij to a next-stage worker",
                              ["node", "dst"], registry=r)
        self._threshold = Gauge("edge_agent_exit_threshold",
                                "Exit confidence threshold c_h of a stage", ["node", "stage"],
                                registry=r)
        self._dropped = Counter("edge_agent_dropped_frames",
                                "Frames dropped (malformed, unknown sender, stale, ...)",
                                ["node", "reason"], registry=r)
        self._refused = Counter("edge_agent_tasks_refused",
                                "Tasks refused to their sender (%s) or rejected at a source (%s)"
                                % (", ".join(WORKER_REFUSALS), ", ".join(SOURCE_REJECTIONS)),
                                ["node", "reason"], registry=r)
        self._alive = Gauge("edge_agent_neighbour_alive",
                            "1 while a neighbour is heard from, 0 once it is treated as gone",
                            ["node", "peer"], registry=r)
        self._link_rate = Gauge("edge_agent_link_rate_bytes_per_second",
                                "Measured rate of the link to a peer, bytes/s (transfers "
                                "start to ACK)", ["node", "peer"], registry=r)
        self._last_warning = Gauge("edge_agent_last_warning_timestamp_seconds",
                                   "The newest WARNING or ERROR line this agent logged (labels); "
                                   "the value is when, in Unix seconds", ["node", "level",
                                                                           "message"], registry=r)
        self._warning_lock = threading.Lock()
        self._warning_handler = None  # type: Optional[logging.Handler]
        self._power = Gauge("edge_agent_power_mode",
                            "1 for the current Jetson power mode (nvpmodel), 0 for earlier ones",
                            ["node", "mode"], registry=r)
        self._write_failed = Counter("edge_agent_write_failures",
                                     "Failed writes of records, their journal or state "
                                     "(a full or read-only disk); the agent keeps serving",
                                     ["node", "what"], registry=r)
        self._on_gpu = Gauge("edge_agent_engine_on_gpu",
                             "1 when the stage engine runs on the GPU, 0 on the CPU",
                             ["node", "stage", "backend"], registry=r)
        self._fallbacks = Counter("edge_agent_engine_fallbacks",
                                "Steps away from the GPU when the stage engine loaded, by cause",
                                ["node", "stage", "reason"], registry=r)
        self._client_refused = Counter("edge_agent_client_refused",
                                       "CURVE handshakes refused on a source's client socket "
                                       "(a client key not on its allow-list)", ["node"], registry=r)
        self._source_tasks = Counter("edge_agent_source_tasks",
                                     "A source's tasks by outcome: created, then each one's "
                                     "final record (completed, lost, rejected)",
                                     ["node", "outcome"], registry=r)
        self._info = Gauge("edge_agent_node_info", "Always 1; the labels say what this agent is "
                           "(stage 0: a source) and the wire protocol it speaks",
                           ["node", "role", "stage", "policy", "protocol"], registry=r)
        self.state = "serving"  # read at each scrape (_NodeState); ``run`` starts at "starting"
        r.register(_NodeState(self))
        self._service_child: Any = None  # the service-time series, once observed
        self._link_lock = threading.Lock()
        self._gone: Set[str] = set()  # peers marked gone: no link rate series for them
        self._children: Dict[Tuple[Any, Any], Any] = {}  # (metric, label) -> series (_child)
        self._power_lock = threading.Lock()
        self._power_mode = None  # type: Optional[str]
        self._server = None  # type: Optional[ThreadingHTTPServer]
        self._thread = None  # type: Optional[threading.Thread]

    # ------------------------------------------------------------ updates
    def _child(self, metric: Any, label: Any) -> Any:
        """``metric``'s series for (this node, ``label``), looked up once: ``labels()`` takes a
        lock and builds its key on every call, about 1 us, and the per-task series are
        updated several times per task (labels here come from fixed sets: stages, reasons)."""
        key = (metric, label if type(label) is str else str(label))  # 2 and 2.0 hash alike
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.node_id, key[1])
        return child

    def task_in(self, stage) -> None:
        """Count a task received for ``stage``."""
        self._child(self._tasks_in, stage).inc()

    def task_out(self, stage) -> None:
        """Count a task handed on after ``stage`` (sent or held: its arrival not yet known)."""
        self._child(self._tasks_out, stage).inc()

    def task_exited(self, stage) -> None:
        """Count a task that exited at ``stage``."""
        self._child(self._tasks_exited, stage).inc()

    def queue_length(self, name: str, n: int) -> None:
        """Set the length of the queue ``name`` ("input" or "output")."""
        self._queue.labels(self.node_id, str(name)).set(n)

    def service_time(self, seconds: float) -> None:
        """Observe one engine service time."""
        if self._service_child is None:  # made at the first (a source never has one)
            self._service_child = self._service.labels(self.node_id)
        self._service_child.observe(seconds)

    def capacity(self, flops: float) -> None:
        """Set the current capacity estimate (FLOP/s)."""
        self._capacity.labels(self.node_id).set(flops)

    def routing(self, dst: str, p: float) -> None:
        """Set the routing probability to successor ``dst``."""
        self._routing.labels(self.node_id, str(dst)).set(p)

    def threshold(self, stage, c: float) -> None:
        """Set the exit threshold of ``stage``."""
        self._threshold.labels(self.node_id, str(stage)).set(c)

    def dropped(self, reason: str) -> None:
        """Count a dropped frame, by reason (e.g. "bad_header", "bad_version", "deadline")."""
        self._child(self._dropped, reason).inc()

    def write_failed(self, what: str, n: int = 1) -> None:
        """Count failed writes of ``what`` ("records", "journal", "state", "rotation")."""
        self._write_failed.labels(self.node_id, str(what)).inc(n)

    def refused(self, reason: str) -> None:
        """Count a task refused here (worker) or rejected (source), by reason."""
        self._child(self._refused, reason).inc()

    def source_task(self, outcome: str) -> None:
        """Count a source's task by ``outcome``: "created", or its final record's status."""
        self._child(self._source_tasks, outcome).inc()

    def node_info(self, role: str, stage: int, policy: str) -> None:
        """Say what this agent is (``edge-agent status`` reads it where no manifest does)."""
        from agent.protocol.wire import VERSION

        self._info.labels(self.node_id, str(role), str(stage), str(policy), str(VERSION)).set(1)
        if role == "source":  # its task counts are shown from start-up, at 0 until a task
            for outcome in SOURCE_OUTCOMES:
                self._child(self._source_tasks, outcome)

    def node_state(self, state: str) -> None:
        """Say the node is ``state`` (one of ``NODE_STATES``) from now on: a plain assignment,
        so a signal handler may call it (a gauge's set takes a lock it may have interrupted)."""
        self.state = state

    def known_series(self, role: str, stages: Iterable[int], clients: bool) -> None:
        """Export at 0 from now on the counts whose label values the config fixes: refusals and
        dropped frames by reason, failed writes; a worker's tasks for each of ``stages``, its
        engine fallbacks for each stage and cause, and its service times; a source's refused
        clients (``clients``: it takes clients). A series that first appears at N is only a
        first sample to Prometheus: rate() and increase() never count those N, and a burst
        that stops before the series exists never shows."""
        source = role == "source"
        for reason in SOURCE_REJECTIONS if source else WORKER_REFUSALS:
            self._child(self._refused, reason)
        for reason in DROP_REASONS + (SOURCE_DROPS if source else WORKER_DROPS):
            self._child(self._dropped, reason)
        for what in ("state",) + (SOURCE_WRITES if source else ()):
            self._write_failed.labels(self.node_id, what)
        if source and clients:
            self._client_refused.labels(self.node_id)
        if not source:
            for h in stages:
                for metric in (self._tasks_in, self._tasks_out, self._tasks_exited):
                    self._child(metric, h)
                for reason in FALLBACK_REASONS:  # counted once the engines load, after this
                    self._fallbacks.labels(self.node_id, str(h), reason)
            if self._service_child is None:
                self._service_child = self._service.labels(self.node_id)

    def neighbour_alive(self, peer: str, alive: bool) -> None:
        """Mark a neighbour alive (1) or gone (0: its link's rate series goes too)."""
        self._alive.labels(self.node_id, str(peer)).set(1 if alive else 0)
        with self._link_lock:  # not between link_rate's look at _gone and its set
            (self._gone.discard if alive else self._gone.add)(str(peer))
            if not alive:
                self.link_rate_gone(peer)

    def link_rate(self, peer: str, rate_bytes_s: float) -> None:
        """Set the measured rate of the link to ``peer`` (bytes/s), unless ``peer`` is gone."""
        with self._link_lock:
            if str(peer) not in self._gone:
                self._link_rate.labels(self.node_id, str(peer)).set(rate_bytes_s)

    def link_rate_gone(self, peer: str) -> None:
        """The link to ``peer`` has no measured rate any more: its series goes, not left stale."""
        try:
            self._link_rate.remove(self.node_id, str(peer))
        except KeyError:  # never measured
            pass

    def power_mode(self, name: str) -> None:
        """Record the current power mode; the previous one drops to 0."""
        name = str(name)
        with self._power_lock:
            if self._power_mode is not None and self._power_mode != name:
                self._power.labels(self.node_id, self._power_mode).set(0)
            self._power.labels(self.node_id, name).set(1)
            self._power_mode = name

    def engine(self, stage, backend: str, on_gpu: bool, fallbacks) -> None:
        """Record where a stage engine runs and the causes (``fallbacks``) it left the GPU for."""
        self._on_gpu.labels(self.node_id, str(stage), str(backend)).set(1 if on_gpu else 0)
        for reason in fallbacks:
            self._fallbacks.labels(self.node_id, str(stage), str(reason)).inc()

    def client_refused(self) -> None:
        """Count a client refused at the client socket's CURVE handshake."""
        self._client_refused.labels(self.node_id).inc()

    def last_warning(self, level: str, message: str, wall: float) -> None:
        """Show ``message`` as the newest warning (the one before it is removed)."""
        # one line; no quotes, backslashes (simple parsers) or unencodable lone surrogates
        text = " ".join(str(message).encode("utf-8", "replace").decode("utf-8").split())
        text = text.replace('"', "'").replace("\\", "/")
        text = text if len(text) <= WARNING_LABEL_CHARS else text[:WARNING_LABEL_CHARS - 3] + "..."
        with self._warning_lock:
            self._last_warning.clear()
            self._last_warning.labels(self.node_id, str(level), text).set(wall)

    def capture_warnings(self, logger: Optional[logging.Logger] = None) -> None:
        """Feed every WARNING and ERROR line of ``logger`` (default: the root) to
        ``last_warning`` until ``close``."""
        if self._warning_handler is None:
            self._warning_handler = _LastWarningHandler(self)
            self._warning_logger = logger or logging.getLogger()
            self._warning_logger.addHandler(self._warning_handler)

    # ------------------------------------------------------------ endpoint
    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the bound port.

        ``host`` is an IPv4 or IPv6 address (``::1`` or ``[::1]``; ``::`` takes IPv4 too) or a
        name (``agent.ops.metrics_server``). Port 0 picks a free port (tests). A port already
        in use raises ``OSError``.
        """
        from prometheus_client.exposition import MetricsHandler

        if self._server is not None:
            return self.port
        self._server, self._thread = start(host, port, MetricsHandler.factory(self.registry))
        log.info("metrics on %s", url(host, self.port))
        return self.port

    @property
    def port(self) -> Optional[int]:
        """The bound port, or None when not serving."""
        return None if self._server is None else int(self._server.server_address[1])

    def close(self) -> None:
        """Stop the endpoint (and the warning capture)."""
        if self._warning_handler is not None:
            self._warning_logger.removeHandler(self._warning_handler)
            self._warning_handler = None
        if self._server is not None:
            stop(self._server, self._thread)
            self._server = self._thread = None


class _NodeState:
    """``edge_agent_node_state`` of ``metrics``: 1 for its ``state``, 0 for the other states."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily("edge_agent_node_state", "1 for the node's state now (starting: "
                              "loading, not serving yet; serving; draining: stopping), 0 for "
                              "the others", labels=["node", "state"])
        for state in NODE_STATES:
            g.add_metric([self.metrics.node_id, state], 1 if state == self.metrics.state else 0)
        return [g]


class _LastWarningHandler(logging.Handler):
    """Hands WARNING and ERROR records to ``AgentMetrics.last_warning``."""

    def __init__(self, metrics: AgentMetrics) -> None:
        super().__init__(logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.metrics.last_warning(record.levelname, record.getMessage(), record.created)
        except Exception:  # a metrics label must never break logging
            self.handleError(record)


class NewestWarning(logging.Handler):
    """Remembers the newest WARNING or ERROR record (level, message, wall time): what a node
    logs while it starts, before its metrics serve (an engine's fallback to the CPU)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.newest: Optional[Tuple[str, str, float]] = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.newest = (record.levelname, record.getMessage(), record.created)
        except Exception:  # a bad format argument must never break logging
            self.handleError(record)


def serve_metrics(cfg: Any, earlier: Optional[Tuple[str, str, float]] = None,
                  state: str = "serving") -> Any:
    """Prometheus metrics of a node config served on ``metrics_port``, or the no-op
    ``NullMetrics``; ``earlier`` (``NewestWarning.newest``) is its newest warning so far;
    ``state`` the node's (``NODE_STATES``) from the first scrape on."""
    from agent.config.checks import is_loopback_host
    from agent.errors import UsageError

    if not cfg.metrics_port:
        return NullMetrics(cfg.node_id)
    m = AgentMetrics(cfg.node_id)
    m.node_state(state)  # before the server listens: no scrape reads another state
    m.known_series(cfg.role, range(cfg.stages[0], cfg.stages[1] + 1), cfg.arrival == "client")
    try:
        m.serve(cfg.metrics_host, cfg.metrics_port)
    except (OSError, OverflowError) as exc:  # gaierror, address in use, not an address here
        raise UsageError(serve_fault(cfg.metrics_host, cfg.metrics_port, exc)) from None
    if earlier is not None:
        m.last_warning(*earlier)
    m.capture_warnings()  # `edge-agent status` shows each node's newest warning
    if not is_loopback_host(cfg.metrics_host):
        log.warning("metrics_public = true: %s answers anyone who can reach it (no TLS, no "
                    "authentication)", url(cfg.metrics_host, m.port))
    return m
