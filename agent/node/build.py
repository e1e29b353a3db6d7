"""The composition root: every part of one node built from its ``NodeConfig``, then served.

Start-up order: check the files the node reads and writes (``agent.node.preflight``: state
directory writable, records/state/stats paths free or regular files and the files appended to
writable, replay set and calibration profile regular files), lock the state directory
(``agent.node.statelock``: one agent per state_dir, held until ``BuiltNode.close``), serve the
metrics (``agent.ops.metrics_start``: state "starting"; a port in use fails at once), hold the
bind endpoints (``agent.ops.bindfault.hold_binds``: likewise, let go as the sockets bind), read
the bundle and check the config against it, build the view and the policy
(``agent.policies.registry.make_policy``), load the stage engine(s) and measure (or look up) the
capacity (a worker: ``agent.node.workerstart``) or open the replay set and the task book (a
source), restore the policy's saved state (``agent.node.restore``), then build the transport,
the outbox, the node's side, its status and the loop. ``serve`` binds the sockets, tells
systemd READY and runs the loop (metrics: "serving", then "draining") until SIGTERM or SIGINT:
a source stops creating tasks and waits up to ``drain_timeout_s`` for answers in flight (the
rest are recorded as lost), a worker refuses new tasks and finishes those it holds
(``worker_drain``), then the sockets close (``agent.net.transport_stop``).

Every start-up fault is a ``UsageError`` of one line naming the field or file and the fix;
``agent.commands.run`` exits with ``EXIT_CONFIG`` on it (no restart loop under systemd). A stop
signal before the loop's handlers ends the start-up at its next step (``agent.ops.startstop``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import zmq

from agent.config.node import NodeConfig
from agent.errors import UsageError
from agent.net.clientkeys import AllowedClients
from agent.net.security import key_owners, load_public_key, security_from_config
from agent.net.transport import Transport
from agent.net.twins import Twins, new_run_id
from agent.node.book import SourceBook, open_replay
from agent.node.capacity import Capacity
from agent.node.hooks import NodeHooks
from agent.node.inference import InferenceThread
from agent.node.limits import check_limits
from agent.node.modeleft import warn_at_start as warn_mode_left
from agent.node.loop import Node
from agent.node.outbox import Outbox
from agent.node.powerwatch import attach as watch_power_mode
from agent.node.preflight import RECORDS_FILE, preflight  # noqa: F401 - doctor's build.preflight
from agent.node.records import RecordWriter
from agent.node.restore import restore_link_rates, restore_policy
from agent.ops.bindfault import bind_sockets, hold_binds
from agent.ops.boot import read_boot_id
from agent.ops.hangup import Hangups
from agent.node.role import Role
from agent.node.source import SourceSide
from agent.node.statelock import StateLock
from agent.node.status import NodeStatus
from agent.node.worker import WorkerSide
from agent.node.workerstart import start_worker
from agent.ops.collector import freeze_startup_objects
from agent.ops.files import FileFault
from agent.ops.metrics import NewestWarning
from agent.ops.metrics_start import MetricsPort, report_node, serving  # noqa: F401 - report_node
from agent.ops.startstop import STOP_SIGNALS, StartupSignals
from agent.ops.state import StateStore
from agent.ops.watchdog import watchdog_interval_s
from agent.policies.api import AgentPolicy, NodeView, default_thresholds, routing_seed
from agent.policies import registry
from agent.protocol import wire
from engines.accelerator import report_engines
from engines.bundle import Bundle, load_bundle
from engines.exit_profile import load_exit_profile

log = logging.getLogger("agent.run")  # the start-up and serving lines keep the command's name


@dataclass
class BuiltNode:
    """A node ready to serve and what must be started and closed around its loop."""

    node: Node
    transport: Transport
    metrics: Any
    runner: Optional[InferenceThread] = None
    engines: List[Any] = field(default_factory=list)
    lock: Optional[StateLock] = None  # the state directory's, let go last
    binds: Any = None  # the bind endpoints held (hold_binds) until ``serve`` binds them

    def close(self) -> None:
        """Stop the inference thread, close engines (not while the thread is still inside
        one's call), sockets and the metrics server, then let the state directory go."""
        try:
            ended = self.runner.stop() if self.runner is not None else True
            if ended:  # else a call still runs: closing would free the buffers and stream it
                for engine in self.engines:  # uses (TensorRT); the process's exit frees them
                    engine.close()
            self.transport.close()
            self.metrics.close()
        finally:
            if self.binds is not None:  # a start-up fault before ``serve`` bound the sockets
                self.binds.close()
            if self.lock is not None:
                self.lock.close()


def open_book(cfg: NodeConfig, metrics: Any) -> SourceBook:
    """The source's task book on ``<state_dir>/records.jsonl``; tasks an earlier run created
    and never recorded (a crash) are recorded as lost now."""
    path = os.path.join(cfg.state_dir, RECORDS_FILE)
    try:
        records = RecordWriter(path, max_bytes=cfg.records_max_bytes,
                               keep_files=cfg.records_keep_files, boot=read_boot_id())
    except OSError as exc:
        raise FileFault("state_dir: cannot open %s: %s" % (path, exc.strerror or exc)) from None
    records.faults.on_count = lambda what, n: metrics.write_failed("records", n)
    records.journal_faults.on_count = lambda what, n: metrics.write_failed("journal", n)
    records.rotation_faults.on_count = lambda what, n: metrics.write_failed("rotation", n)
    book = SourceBook(cfg.node_id, records)
    book.on_outcome = metrics.source_task
    n = book.recover(time.time(), time.monotonic())
    if n:
        log.warning("%d task(s) created before the last crash had no record: recorded as lost "
                    "(reason crash) in %s", n, path)
    return book


def check_config(cfg: NodeConfig, bundle: Bundle) -> str:
    """Raise ``UsageError`` for a config the bundle, the policy or its limits cannot serve
    (a worker's ``emulate_capacity_flops`` too: each stage it holds done within a day)."""
    from agent.config.checks import check_service_times

    if cfg.thresholds and len(cfg.thresholds) != bundle.num_stages:  # padded or cut, silently
        raise UsageError("thresholds: %d value(s) for a bundle of %d stages; give one per stage "
                         "1..%d (the last stage answers every task it gets) or none for the "
                         "defaults" % (len(cfg.thresholds), bundle.num_stages, bundle.num_stages))
    if cfg.role != "worker":  # limits last: a limit below one task drops or refuses every task
        return check_limits(cfg, bundle)
    bundle.stage(cfg.stages[1])  # raises a clear error for a stage the bundle lacks
    why = registry.lookup(cfg.policy, "policy", "agent").one_stage_only
    if cfg.stages[1] > cfg.stage and why:
        raise UsageError("last_stage: policy %s: %s; give this worker one stage or use another "
                         "policy" % (cfg.policy, why))
    if (cfg.terminal and cfg.stages[1] < bundle.num_stages
            and not bundle.stage(cfg.stages[1]).has_exit):
        raise UsageError("terminal: stage %d has no exit head to answer with; end the worker "
                         "at a stage with a head (last_stage)" % cfg.stages[1])
    if cfg.stages[1] < bundle.num_stages and not cfg.successors and not cfg.terminal:
        raise UsageError("peers: a stage-%d worker needs at least one stage-%d peer (the "
                         "bundle has %d stages)" % (cfg.stages[1], cfg.stages[1] + 1,
                                                    bundle.num_stages))
    # an emulated device slower than a stage a day: its neighbours would drop its heartbeats
    flops = {h: float(bundle.stage(h).flops) for h in range(cfg.stage, cfg.stages[1] + 1)}
    check_service_times(cfg.emulate_capacity_flops, flops, "emulate_capacity_flops", UsageError)
    return check_limits(cfg, bundle)


def open_exit_profile(bundle: Bundle) -> Any:
    """The bundle's exit profile, or None (none shipped, or unusable: logged)."""
    if not bundle.exit_profile_path:
        return None
    try:
        return load_exit_profile(bundle.exit_profile_path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("exit profile %s unusable (%s); threshold tuning off",
                    bundle.exit_profile_path, exc)
        return None


def build_view(cfg: NodeConfig, bundle: Bundle, exit_profile: Any) -> NodeView:
    """The policy's ``NodeView`` for this config and bundle."""
    return NodeView(
        node_id=cfg.node_id, role=cfg.role, stage=cfg.stage, num_stages=bundle.num_stages,
        stage_flops=tuple(float(s.flops) for s in bundle.stages),
        stage_input_bytes=tuple(float(s.input_bytes) for s in bundle.stages),
        exit_stages=tuple(bundle.early_exit_stages),
        successors=tuple(p.id for p in cfg.successors),
        predecessors=tuple(p.id for p in cfg.predecessors),
        link_rate_bytes_s={p.id: p.link_rate_bytes_s for p in cfg.peers},
        arrival_rate_tasks_s=cfg.arrival_rate_tasks_s if cfg.role == "source" else 0.0,
        exit_profile=exit_profile, tradeoff=cfg.tradeoff, last_stage=cfg.stages[1],
        peer_stages={p.id: p.stages for p in cfg.peers}, terminal=cfg.terminal)


def configured_policy(cfg: NodeConfig, bundle: Bundle, view: NodeView) -> AgentPolicy:
    """The policy ``cfg`` names, made and configured (a knob or a placement it refuses raises
    ``UsageError``): ``build``'s, and the testbed's check of every agent before a run."""
    thresholds = default_thresholds(bundle.early_exit_stages, cfg.thresholds)
    policy = registry.make_policy(cfg.policy, thresholds, cfg.policy_knobs,
                                  routing_seed(cfg.seed, cfg.node_id))  # one stream per node
    policy.configure(cfg, view)
    return policy


def build(cfg: NodeConfig, notifier: Any = None, ctx: Optional[zmq.Context] = None,
          starting: Optional[StartupSignals] = None) -> BuiltNode:
    """Build every part of the node from ``cfg``; the sockets are not bound yet. ``starting``
    (``run``'s): a stop signal meanwhile ends the build at the next step (``StoppedStarting``)."""
    starting = starting or StartupSignals()  # not armed: never stops
    memo = NewestWarning()  # start-up warnings: `status` shows them once the metrics serve
    logging.getLogger().addHandler(memo)
    lock = binds = None
    try:
        preflight(cfg)
        warn_mode_left(cfg)  # a mode an interrupted calibration left: before mu is read or timed
        starting.step("files checked")
        lock = StateLock(cfg.state_dir, cfg.node_id)  # before the journal or the state is read
        starting.step("state_dir locked")
        with MetricsPort(cfg, memo.newest) as port:  # served, "starting", before the engines
            binds = hold_binds(cfg)  # the sockets' endpoints too, held until ``serve`` binds
            built = _build(cfg, notifier, ctx, starting, port)
        built.lock, built.binds = lock, binds
        return built
    except BaseException:
        if binds is not None:
            binds.close()
        if lock is not None:
            lock.close()
        raise
    finally:
        logging.getLogger().removeHandler(memo)


def _build(cfg: NodeConfig, notifier: Any, ctx: Optional[zmq.Context],
           starting: StartupSignals, port: MetricsPort) -> BuiltNode:
    first, last = cfg.stages  # (0, 0) for a source, which runs no stage
    bundle = load_bundle(cfg.bundle, verify_files=range(first, last + 1) if first else ())
    security = security_from_config(cfg)
    check_config(cfg, bundle)
    keys = ({p.id: load_public_key(p.public_key) for p in cfg.peers}
            if cfg.security == "curve" else {})
    view = build_view(cfg, bundle, open_exit_profile(bundle))
    policy = configured_policy(cfg, bundle, view)
    store = StateStore(cfg.state_dir)
    starting.step("bundle, keys and policy checked")
    runner = None
    engines: Dict[int, Any] = {}
    specs: Dict[int, Any] = {}
    if cfg.role == "worker":
        specs, engines, runner, capacity = start_worker(cfg, bundle, policy.wants_logits,
                                                        notifier, starting)
    else:
        replay = open_replay(cfg, bundle)
        capacity = Capacity()
        starting.step("replay set read")
    metrics = port.serve()
    if cfg.role == "source":
        try:
            book = open_book(cfg, metrics)
        except BaseException:
            metrics.close()
            raise
    report_engines(engines, metrics)
    hooks = NodeHooks(notifier, metrics, store, watchdog_interval_s(os.environ))
    policy, saved = restore_policy(policy, hooks, store,
                                   lambda: configured_policy(cfg, bundle, view))
    capacity.refresh(view)
    client_keys = (AllowedClients(cfg.client_keys_dir)  # read again on SIGHUP
                   if cfg.client_keys_dir and cfg.arrival == "client" else None)
    refused = [0]  # CURVE handshakes refused on the client socket (counted on the ZAP thread)

    def on_client_refused() -> None:
        refused[0] += 1
        metrics.client_refused()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers, security,
                          cfg.max_message_bytes,
                          cfg.client_bind if cfg.arrival == "client" else "", keys,
                          client_keys, on_client_refused, key_owners(cfg), Twins(new_run_id()))
    role: Role
    if runner is not None:
        outbox = Outbox(cfg, transport, policy, view, capacity, lambda: runner.queued, metrics)
        role = WorkerSide(cfg, outbox, policy, specs, runner, capacity, metrics)
        outbox.input_queue = role.input_queue  # the engine's queue and the backlog before it
    else:
        outbox = Outbox(cfg, transport, policy, view, capacity, metrics=metrics)
        role = SourceSide(cfg, outbox, policy, book, replay)
    hooks.count = outbox.count
    policy.count = outbox.count  # a policy's own counts (e.g. mlci_bad_ensemble) in stats.json
    restore_link_rates(outbox, saved)
    extra = role.stats
    if client_keys is not None:
        extra = lambda: dict(role.stats(), client_refused=refused[0])  # noqa: E731
    status = NodeStatus(cfg, policy, view, outbox.counters, extra)
    watch_power_mode(cfg, capacity, view, metrics, hooks, status, specs, engines)
    node = Node(cfg, transport, policy, view, outbox, role, status, hooks)
    return BuiltNode(node, transport, metrics, runner, list(engines.values()))


def serve(cfg: NodeConfig, notifier: Any = None, ctx: Optional[zmq.Context] = None,
          starting: Optional[StartupSignals] = None, hangups: Optional[Hangups] = None) -> int:
    """Build the node from ``cfg`` and run it until SIGTERM/SIGINT. ``starting``: ``run``'s
    start-up signals (a stop before the loop's handlers raises ``StoppedStarting``);
    ``hangups``: ``run``'s SIGHUP handling (None: one of its own for this call)."""
    starting = starting or StartupSignals()
    own_ctx, own_hangups = ctx is None, hangups is None
    ctx = ctx or zmq.Context()
    hangups = hangups or Hangups().install()
    clean = False
    try:
        built = build(cfg, notifier, ctx, starting)
        node = built.node
        old: Dict[int, Any] = {}
        try:
            bind_sockets(cfg, built.transport, built.binds)  # the held endpoints let go first
            starting.step("sockets bound")
            if built.runner is not None:
                built.runner.start()
            on_stop = serving(node, built.metrics)  # metrics: serving; draining from a stop
            old = {s: signal.signal(s, on_stop) for s in STOP_SIGNALS}
            starting.check()  # one that came before the loop's handlers: still start-up's
            hangups.serving(built.transport.client_keys)
            if notifier is not None:
                notifier.ready("%s %s serving (policy %s)" % (cfg.role, cfg.node_id, cfg.policy))
            log.info("%s %s serving: policy %s, control %s, data %s, %d peer(s), wire protocol "
                     "%d, run %s", cfg.role, cfg.node_id, cfg.policy,
                     built.transport.bound.get("control", cfg.control_bind),
                     built.transport.bound.get("data", cfg.data_bind), len(cfg.peers),
                     wire.VERSION, built.transport.twins.run_id)
            freeze_startup_objects()  # full collections skip what start-up built (collector.py)
            node.run()
        finally:
            if notifier is not None:
                notifier.stopping()
            built.close()
            # restored only after the clean-up: a second SIGTERM meanwhile (an impatient
            # operator, a harness) must not kill the agent before it has written its state
            for sig, handler in old.items():
                signal.signal(sig, handler)
        clean = True
    finally:
        if own_hangups:
            hangups.close()
        if own_ctx:
            if clean:
                ctx.term()
            else:  # a start-up fault may leave a socket half made: never hang on it
                ctx.destroy(linger=0)
    return 0

