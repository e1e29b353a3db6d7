"""``edge-agent run --config node.toml``: run one agent (source or worker) until SIGTERM.

Start-up order: read the config and the bundle, load the stage engine and measure (or look up)
the capacity, bind and connect the sockets, then tell systemd READY. SIGTERM or SIGINT stops
the loop: a source stops creating tasks and waits up to ``drain_timeout_s`` for answers in
flight (the rest are recorded as lost), then every socket closes with LINGER 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from typing import Any, Optional

from agent.errors import UsageError

# Start-up time asked of systemd (EXTEND_TIMEOUT_USEC) while engines load: a first TensorRT
# load builds the plan, which takes minutes on the smaller Jetsons.
ENGINE_LOAD_TIMEOUT_S = 1800.0

HELP = "run one agent (source or worker) from a node config until SIGTERM"

log = logging.getLogger("agent.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="NODE.toml",
                        help="node config file (see README, 'Node config')")


def run(args: argparse.Namespace) -> int:
    from agent.config.node import load_config
    from agent.ops.sdnotify import Notifier

    cfg = load_config(args.config)
    return serve(cfg, Notifier.from_environ(os.environ))


def _open_exit_profile(bundle) -> Any:
    if not bundle.exit_profile_path:
        return None
    from engines.exit_profile import load_exit_profile
    try:
        return load_exit_profile(bundle.exit_profile_path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("exit profile %s unusable (%s); threshold tuning off",
                    bundle.exit_profile_path, exc)
        return None


def build_view(cfg, bundle, exit_profile):
    """The policy's ``NodeView`` for this config and bundle."""
    from agent.policies.api import NodeView

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
        peer_stages={p.id: p.stages for p in cfg.peers})


def _worker_parts(cfg, bundle, notifier: Any = None):
    """Engines (one per stage served), inference thread and start-up capacity of a worker.

    A worker holding several stages reports mu = total flops / total median service time over
    its stages, and the mean service time per stage.
    """
    import numpy as np

    from agent.node.capacity import CapacityReport, startup_capacity
    from agent.node.inference import InferenceThread
    from engines import load_engine

    first, last = cfg.stages
    specs = {h: bundle.stage(h) for h in range(first, last + 1)}
    engines = {}
    if notifier is not None and cfg.backend != "onnxruntime":
        notifier.extend_timeout(ENGINE_LOAD_TIMEOUT_S)
        notifier.status("loading stage engine(s) %d-%d (a TensorRT plan build takes minutes)"
                        % (first, last))
    try:
        for h, spec in specs.items():
            engines[h] = load_engine(spec, backend=cfg.backend, threads=cfg.engine_threads,
                                     precision=cfg.precision, cache_dir=cfg.engine_cache_dir or None)
    except BaseException:
        for e in engines.values():
            e.close()
        raise
    runner = InferenceThread(engines, {h: s.flops for h, s in specs.items()},
                             cfg.emulate_capacity_flops)
    reports = []
    for h, spec in specs.items():
        engine = engines[h]
        profile_mu: Optional[float] = None
        if cfg.capacity_profile:
            from calibration.profile import lookup_capacity
            used = ("tensorrt" if "tensorrt" in str(engine.info.get("backend", "")).lower()
                    else "onnxruntime")
            profile_mu = lookup_capacity(cfg.capacity_profile, spec, used, cfg.precision,
                                         cfg.power_mode or None)
            if profile_mu is None:
                log.warning("no current entry for stage %d in %s; timing the engine instead",
                            spec.index, cfg.capacity_profile)
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        report = startup_capacity(float(spec.flops), lambda a, h=h: runner.run_one(a, h), x,
                                  cfg.warmup_runs, cfg.timing_runs, cfg.emulate_capacity_flops,
                                  profile_mu)
        log.info("stage %d on %s: %s", h, engine.info.get("backend", "?"), report.describe())
        reports.append(report)
    if len(reports) > 1:
        total = sum(r.service_time_s for r in reports)
        flops = float(sum(s.flops for s in specs.values()))
        measured = sum(r.measured_capacity_flops for r in reports) / len(reports)
        origin = "emulated" if cfg.emulate_capacity_flops > 0 else reports[0].origin
        reports = [CapacityReport(flops / total, total / len(reports), measured, origin)]
    return specs, list(engines.values()), runner, reports[0]


def serve(cfg, notifier: Any = None, ctx: Any = None) -> int:
    """Build every part of the node from ``cfg`` and run it until SIGTERM/SIGINT."""
    import zmq

    from agent.node.hooks import NodeHooks
    from agent.node.loop import Node
    from agent.policies.api import default_thresholds
    from agent.policies.registry import make_policy
    from agent.net.security import load_public_key, security_from_config
    from agent.node.book import RecordWriter, ReplaySet, SourceBook
    from agent.ops.state import StateStore
    from agent.net.transport import Transport
    from engines.bundle import load_bundle

    bundle = load_bundle(cfg.bundle)
    os.makedirs(cfg.state_dir, exist_ok=True)
    security = security_from_config(cfg)
    if cfg.role == "worker":
        bundle.stage(cfg.stages[1])  # raises a clear error for a stage the bundle lacks
        if cfg.stages[1] > cfg.stage and cfg.policy == "dtoee":
            raise UsageError("last_stage: policy dtoee models one stage per worker; give this "
                             "worker one stage or use another policy")
        if cfg.stages[1] < bundle.num_stages and not cfg.successors:
            raise UsageError("peers: a stage-%d worker needs at least one stage-%d peer (the "
                             "bundle has %d stages)" % (cfg.stages[1], cfg.stages[1] + 1,
                                                        bundle.num_stages))
    keys = ({p.id: load_public_key(p.public_key) for p in cfg.peers}
            if cfg.security == "curve" else {})
    view = build_view(cfg, bundle, _open_exit_profile(bundle))
    thresholds = default_thresholds(bundle.early_exit_stages, cfg.thresholds)
    policy = make_policy(cfg.policy, thresholds, cfg.policy_knobs, cfg.seed)
    policy.configure(cfg, view)
    store = StateStore(cfg.state_dir)
    spec = runner = replay = book = None
    engines = []
    estimator = None
    capacity = service = 0.0
    if cfg.role == "worker":
        spec, engines, runner, report = _worker_parts(cfg, bundle, notifier)
        capacity, service = report.capacity_flops, report.service_time_s
        if cfg.online_capacity and len(spec) == 1:  # one stage: every service time is comparable
            from calibration.online import OnlineCapacityEstimator
            estimator = OnlineCapacityEstimator(float(spec[cfg.stage].flops), capacity)
    else:
        from engines.demo import REPLAY_PATH
        first = bundle.stage(1)
        replay = ReplaySet(cfg.replay_path or REPLAY_PATH, first.input_shape, first.input_dtype)
        book = SourceBook(cfg.node_id, RecordWriter(os.path.join(cfg.state_dir, "records.jsonl")))
    metrics = _metrics(cfg)
    if cfg.metrics_port and cfg.role == "worker":
        _report_power_mode(cfg, metrics)
    hooks = NodeHooks(notifier, metrics, store, estimator, capacity, service)
    saved = hooks.load_state()
    if saved and saved.get("policy") == policy.name:
        policy.restore(saved)
        log.info("restored policy state from %s: routing %s thresholds %s", store.path,
                 json.dumps(policy.routing(), sort_keys=True),
                 json.dumps({str(k): v for k, v in policy.thresholds().items()}, sort_keys=True))
    elif saved:  # another policy's routing or thresholds would be wrong for this one
        log.info("ignoring saved state of policy %r (now %r)", saved.get("policy"), policy.name)
    hooks.refresh(view)
    if (cfg.security == "curve" and cfg.arrival == "client"
            and not cfg.client_bind.startswith(("ipc://", "tcp://127.", "tcp://localhost:"))):
        # the local-client socket takes plain TASKs (clients hold no fleet keys)
        log.warning("client_bind %s is not CURVE-protected; bind it to 127.0.0.1 or ipc:// "
                    "unless the network to the clients is trusted", cfg.client_bind)
    own_ctx = ctx is None
    ctx = ctx or zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers, security,
                          cfg.max_message_bytes,
                          cfg.client_bind if cfg.arrival == "client" else "", keys)
    node = Node(cfg, transport, policy, view, spec, runner, replay, book, hooks)
    try:
        try:
            transport.open()
        except zmq.ZMQError as exc:
            raise UsageError("cannot bind %s / %s: %s" % (cfg.control_bind, cfg.data_bind, exc)) from None
        if runner is not None:
            runner.start()
        old = {s: signal.signal(s, lambda *_: node.stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        if notifier is not None:
            notifier.ready("%s %s serving (policy %s)" % (cfg.role, cfg.node_id, cfg.policy))
        log.info("%s %s serving: policy %s, control %s, data %s, %d peer(s)", cfg.role,
                 cfg.node_id, cfg.policy, cfg.control_bind, cfg.data_bind, len(cfg.peers))
        node.run()
        for s, h in old.items():
            signal.signal(s, h)
    finally:
        if notifier is not None:
            notifier.stopping()
        if runner is not None:
            runner.stop()
        for engine in engines:
            engine.close()
        transport.close()
        metrics.close()
        if own_ctx:
            ctx.term()
    return 0


def _metrics(cfg):
    from agent.ops.metrics import AgentMetrics, NullMetrics

    if not cfg.metrics_port:
        return NullMetrics(cfg.node_id)
    m = AgentMetrics(cfg.node_id)
    m.serve(cfg.metrics_host, cfg.metrics_port)
    return m


def _report_power_mode(cfg, metrics) -> None:
    """Power-mode gauge: the configured mode, else the one active now (jtop, or the CPU path)."""
    try:
        from calibration.profile import current_power_mode

        metrics.power_mode(cfg.power_mode or current_power_mode())
    except Exception as exc:  # a metrics label must never keep the agent from serving
        log.warning("power mode unknown for metrics: %s", exc)
