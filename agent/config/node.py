"""Node config: one TOML file per agent, parsed into one flat frozen ``NodeConfig``.

Parsing is separate from reading: ``parse_config(obj, base_dir)`` validates a decoded TOML
table (relative paths are resolved against ``base_dir``), ``load_config(path)`` reads the file
and calls it. Every error is a ``ConfigError`` naming the field and the bad value, e.g.
``node.toml: config.peers[1].stage: must be an integer >= 0, got -1``. ``dump_config(cfg)`` writes TOML
text that ``load_config`` reads back to an equal ``NodeConfig`` (the testbed generates its node
files with it).

A minimal worker::

    node_id = "w1"
    role = "worker"
    stage = 1
    bundle = "/opt/models/demo"
    control_bind = "tcp://0.0.0.0:5551"
    data_bind = "tcp://0.0.0.0:5552"
    state_dir = "/var/lib/edge-agent"
    policy = "dtoee"

    [[peers]]
    id = "w2a"
    stage = 2
    control_address = "tcp://10.0.0.12:5551"
    data_address = "tcp://10.0.0.12:5552"
    link_rate_bytes_s = 12500000.0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Tuple

from agent.config.checks import (MAX_INTERVAL_S, MAX_MESSAGE_BYTES_LIMIT, MAX_QUEUE_TASKS,
                                  MIN_INTERVAL_S, ENGINE_BATCH_MAX, ENGINE_THREADS_MAX, PATH_FIELDS,
                                  check_endpoint, check_endpoint_from, check_limits,
                                  check_node_id, ipc_from, is_loopback_host, phase_fits)
from agent.config.fields import REQUIRED, Fields
from agent.config.jsonfile import load_toml
from agent.config.peer import Peer, parse_peer
from agent.config.toml_dump import to_toml
from agent.errors import UsageError
from agent.net.keyfiles import is_z85_key
from agent.ops.files import CONFIG_MAX_BYTES, FileFault, read_bounded
from agent.policies import registry, splits
from agent.policies.setting import DEFAULT_TRADEOFF


class ConfigError(UsageError):
    """A node config is malformed; the message names the file, field and value."""


ROLES = ("source", "worker")
BACKENDS = ("auto", "tensorrt", "onnxruntime")
PRECISIONS = ("fp32", "fp16")  # no int8: it needs an INT8 calibration cache, which is not built
ACCELERATORS = ("required", "preferred", "none")  # see engines/accelerator.py
SECURITY_MODES = ("none", "curve")
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # one message's bound (clients check it too)
MIN_MAX_MESSAGE_BYTES = 1024  # the lowest max_message_bytes a node config takes
ARRIVAL_MODES = ("poisson", "client")


@dataclass(frozen=True)
class NodeConfig:
    """Everything one agent process needs; one field per setting, SI units in the names."""

    node_id: str  # unique id of this node; also its control-plane topic
    role: str  # "source" (produces tasks, receives results) or "worker" (serves one stage)
    stage: int  # 0 for a source; the 1-based stage a worker serves (its first one)
    bundle: str  # model bundle directory (absolute after parsing)
    state_dir: str  # where records.jsonl, stats.json and saved policy state live
    control_bind: str  # endpoint of this node's PUB socket, e.g. "tcp://0.0.0.0:5551"
    data_bind: str  # endpoint of this node's ROUTER socket, e.g. "tcp://0.0.0.0:5552"
    peers: Tuple[Peer, ...] = ()  # neighbours: successors, predecessors and (for workers) sources
    last_stage: int = 0  # a worker holding several stages serves stage..last_stage; 0 = just stage
    terminal: bool = False  # worker: answer every task at last_stage (a DIMEE/MLCI tier)
    policy: str = "dtoee"  # routing/threshold policy: a name of agent.policies.registry
    policy_knobs: Mapping[str, Any] = field(default_factory=dict)  # knobs passed to the policy
    thresholds: Tuple[float, ...] = ()  # initial c_h per stage (1..H); () = DEFAULT_THRESHOLD each
    tradeoff: float = DEFAULT_TRADEOFF  # a in U = a*T - (1-a)*(A - A_min)/(A_max - A_min) (dtoee)
    slot_length_s: float = 5.0  # dtoee: length of one slot (configuration phase + offloading)
    rounds_per_slot: int = 20  # dtoee: request/status rounds in the configuration phase
    round_interval_s: float = 0.05  # dtoee: time between rounds; configuration lasts rounds*this
    heartbeat_interval_s: float = 0.5  # liveness/queue-state broadcast period
    neighbour_timeout_rounds: int = 4  # heartbeat periods of silence after which a peer is gone
    start_grace_s: float = 5.0  # no "no route" verdict (nor unheard-peer warning) this long
    # after start unless a successor is heard: neighbours need heartbeats, CURVE handshakes
    ack_timeout_s: float = 1.0  # data plane: re-send to another successor when no ACK by then
    result_timeout_s: float = 20.0  # source: re-issue a task whose result has not come by then
    max_attempts: int = 3  # source: issues of one task (first + re-issues) before it is lost
    drain_timeout_s: float = 10.0  # on SIGTERM: a source waits for results, a worker finishes
    max_queue_tasks: int = 32  # tasks a node holds (input + output queue); more are refused
    max_queue_bytes: int = 64 * 1024 * 1024  # tensor bytes a node holds; more are refused
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # ZMQ_MAXMSGSIZE on receiving sockets
    backend: str = "auto"  # engine backend: auto | tensorrt | onnxruntime
    precision: str = "fp32"  # engine precision: fp32 | fp16 (int8 is refused: no calibration cache)
    accelerator: str = ""  # GPU use: required | preferred | none; "" = required on a Jetson, else preferred
    engine_threads: int = 1  # intra-op threads of the engine
    engine_batch_max: int = 1  # waiting tasks of one stage run in one engine call, at most
    # this many (1: one call per task; the stage must take any batch: agent.node.batching)
    # TensorRT plan cache; "" = $CACHE_DIRECTORY/trt, else ~/.cache/edge-agent/trt
    engine_cache_dir: str = ""
    capacity_profile: str = ""  # calibration profile file; "" = time the engine at start-up
    power_mode: str = ""  # power mode name to look up in the calibration profile; "" = current
    power_mode_check_interval_s: float = 30.0  # Jetson worker, power_mode "": re-read the mode
    warmup_runs: int = 5  # start-up timing: runs discarded before measuring
    timing_runs: int = 20  # start-up timing: runs whose median gives the service time
    emulate_capacity_flops: float = 0.0  # >0: pad service time to flops / this (slower device)
    emulate_links: bool = False  # pace sends at each peer's link_rate_bytes_s (serialised per link)
    online_capacity: bool = True  # re-estimate mu from observed service times while serving
    arrival: str = "poisson"  # source: "poisson" (replay set at arrival_rate_tasks_s) or "client"
    arrival_rate_tasks_s: float = 1.0  # source: Poisson arrival rate phi
    client_bind: str = ""  # source: endpoint clients push tasks to (ipc:// or loopback tcp, or CURVE)
    client_keys_dir: str = ""  # source, curve: folder of the clients' *.key files; set, the client
    # socket is a CURVE server taking only those keys (and client_bind may be any address)
    replay_path: str = ""  # source: npz with x, y; "" = the demo replay set shipped with engines
    replay_rows: str = "all"  # source: replay rows drawn: all | test (odd) | validation (even)
    max_tasks: int = 0  # source: stop creating tasks after this many; 0 = unlimited
    seed: int = 0  # random seed of a source's arrivals and samples, and of routing draws (mixed
    # with node_id: no two nodes draw alike)
    security: str = "none"  # "none" or "curve" (CurveZMQ on every socket)
    secret_key_path: str = ""  # curve: this node's secret key file (from `edge-agent keys`)
    public_key_path: str = ""  # curve: this node's public key file
    allowed_keys_dir: str = ""  # curve: folder of *.key files also accepted (besides peers' keys),
    # e.g. every worker that may return results to this source; "" = only the peers
    metrics_port: int = 0  # Prometheus exporter port; 0 = off
    metrics_host: str = "127.0.0.1"  # Prometheus exporter bind address (loopback unless public)
    metrics_public: bool = False  # allow a non-loopback metrics_host (no TLS/auth: logged warning)
    status_interval_s: float = 5.0  # period of stats.json and of the status line when it changed
    records_flush_interval_s: float = 1.0  # source: flush records.jsonl at least this often
    records_max_bytes: int = 64 << 20  # source: rotate records.jsonl at this size; 0 = never
    records_keep_files: int = 8  # source: rotated files kept, records.jsonl.1 (newest) .. .N

    def peer(self, peer_id: str) -> Peer:
        """The peer named ``peer_id``; KeyError if it is not configured."""
        for p in self.peers:
            if p.id == peer_id:
                return p
        raise KeyError(peer_id)

    @property
    def stages(self) -> Tuple[int, int]:
        """(first, last) stage this node serves; (0, 0) for a source."""
        return (self.stage, max(self.stage, self.last_stage))

    @property
    def successors(self) -> Tuple[Peer, ...]:
        """Peers that serve a stage following one of ours (L_i)."""
        first, last = self.stages
        return tuple(p for p in self.peers if p.stage > 0 and p.stages[0] <= last + 1
                     and p.stages[1] >= first + 1)

    @property
    def predecessors(self) -> Tuple[Peer, ...]:
        """Peers whose tasks can come to us (V_j); for stage 1 these include the sources."""
        if self.stage == 0:
            return ()
        first, last = self.stages
        return tuple(p for p in self.peers if p.stages[0] + 1 <= last and p.stages[1] + 1 >= first)

    @property
    def neighbour_silence_s(self) -> float:
        """Seconds of a neighbour's silence after which it is gone, before a slow link's extra."""
        return float(self.neighbour_timeout_rounds * self.heartbeat_interval_s)

    @property
    def sources(self) -> Tuple[Peer, ...]:
        """Sources this worker returns results to."""
        return tuple(p for p in self.peers if p.stage == 0)


_NODE_FIELDS = {f.name for f in fields(NodeConfig)}


def _endpoint(value: str, where: str, base_dir: str) -> str:
    return check_endpoint_from(value, where, base_dir, ConfigError)  # ipc://REL: config's folder


def parse_config(obj: Any, base_dir: str = ".", where: str = "config") -> NodeConfig:
    """Validate a decoded TOML table into a ``NodeConfig``; raise ``ConfigError`` naming the field."""
    if not isinstance(obj, Mapping):
        raise ConfigError("%s: top level must be a table" % where)
    unknown = sorted(set(obj) - _NODE_FIELDS)
    if unknown:
        raise ConfigError("%s: unknown field(s) %s (known: %s)"
                          % (where, ", ".join(unknown), ", ".join(sorted(_NODE_FIELDS))))
    r = Fields(obj, where, ConfigError)
    # defaults come from the dataclass, stated once
    dflt = {n: f.default for n, f in NodeConfig.__dataclass_fields__.items()}.__getitem__

    kw: Dict[str, Any] = {}
    kw["node_id"] = r.str("node_id")
    check_node_id(kw["node_id"], where + ".node_id", ConfigError)
    kw["role"] = r.str("role", choices=ROLES)
    kw["stage"] = r.int("stage", 0 if kw["role"] == "source" else REQUIRED, lo=0)
    if kw["role"] == "source" and kw["stage"] != 0:
        raise ConfigError("%s.stage: a source has stage 0, got %r" % (where, kw["stage"]))
    if kw["role"] == "worker" and kw["stage"] < 1:
        raise ConfigError("%s.stage: a worker serves a stage >= 1, got %r" % (where, kw["stage"]))
    kw["last_stage"] = r.int("last_stage", 0, lo=0)
    if kw["last_stage"] and (kw["role"] == "source" or kw["last_stage"] < kw["stage"]):
        raise ConfigError("%s.last_stage: must be 0 (one stage) or >= stage %d for a worker, got %r"
                          % (where, kw["stage"], kw["last_stage"]))
    for key in ("bundle", "state_dir"):
        kw[key] = r.file_path(key, base_dir)
        if not kw[key]:
            raise ConfigError("%s.%s: missing" % (where, key))
    for key in ("control_bind", "data_bind"):
        kw[key] = _endpoint(r.str(key), "%s.%s" % (where, key), base_dir)
    peers_obj = obj.get("peers", [])
    if not isinstance(peers_obj, list):
        raise ConfigError("%s.peers: must be an array of tables ([[peers]]), got %r" % (where, peers_obj))
    peers = tuple(parse_peer(p, "%s.peers[%d]" % (where, i), base_dir, ConfigError)
                  for i, p in enumerate(peers_obj))
    seen = set()
    for i, p in enumerate(peers):
        if p.id in seen or p.id == kw["node_id"]:
            raise ConfigError("%s.peers[%d].id: duplicate or own node id %r" % (where, i, p.id))
        seen.add(p.id)
    kw["peers"] = peers
    kw["policy"] = r.str("policy", dflt("policy"))  # checked against the registry below
    knobs = obj.get("policy_knobs", {})
    if not isinstance(knobs, Mapping):
        raise ConfigError("%s.policy_knobs: must be a table, got %r" % (where, knobs))
    try:  # the policy reads its own knobs: typos and knobs a node ignores are errors
        registry.lookup(kw["policy"], r.path("policy"), "agent")
        registry.check_agent_knobs(kw["policy"], knobs, r.path("policy_knobs"), ConfigError)
    except ConfigError:
        raise
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    kw["policy_knobs"] = dict(knobs)
    th = obj.get("thresholds", [])
    if not isinstance(th, list) or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c <= 1 for c in th):
        raise ConfigError("%s.thresholds: must be a list of numbers in (0, 1], got %r" % (where, th))
    kw["thresholds"] = tuple(float(c) for c in th)
    tradeoff = r.num("tradeoff", dflt("tradeoff"), lo=0)
    if tradeoff > 1:
        raise ConfigError("%s.tradeoff: must be in [0, 1], got %r" % (where, tradeoff))
    kw["tradeoff"] = tradeoff
    for key in ("slot_length_s", "round_interval_s", "heartbeat_interval_s", "ack_timeout_s",
                "result_timeout_s", "status_interval_s", "records_flush_interval_s",
                "drain_timeout_s", "power_mode_check_interval_s", "start_grace_s"):
        kw[key] = r.num(key, dflt(key), lo=MIN_INTERVAL_S, hi=MAX_INTERVAL_S)
    for key in ("rounds_per_slot", "neighbour_timeout_rounds", "max_attempts", "timing_runs",
                "records_keep_files"):
        kw[key] = r.int(key, dflt(key), lo=1)
    kw["engine_threads"] = r.int("engine_threads", dflt("engine_threads"), lo=1, hi=ENGINE_THREADS_MAX)
    kw["engine_batch_max"] = r.int("engine_batch_max", dflt("engine_batch_max"), lo=1,
                                   hi=ENGINE_BATCH_MAX)
    for key in ("warmup_runs", "max_tasks", "seed", "records_max_bytes"):
        kw[key] = r.int(key, dflt(key), lo=0)
    kw["max_message_bytes"] = r.int("max_message_bytes", dflt("max_message_bytes"),
                                    lo=MIN_MAX_MESSAGE_BYTES, hi=MAX_MESSAGE_BYTES_LIMIT)
    kw["max_queue_tasks"] = r.int("max_queue_tasks", dflt("max_queue_tasks"), lo=1, hi=MAX_QUEUE_TASKS)
    kw["max_queue_bytes"] = r.int("max_queue_bytes", dflt("max_queue_bytes"), lo=1024)
    kw["metrics_port"] = r.int("metrics_port", dflt("metrics_port"), lo=0, hi=65535)
    kw["backend"] = r.str("backend", dflt("backend"), BACKENDS)
    if obj.get("precision") == "int8":
        raise ConfigError("%s.precision: int8 is not supported (TensorRT INT8 needs a calibration "
                          "cache, which edge-agent does not build); use fp16" % where)
    kw["precision"] = r.str("precision", dflt("precision"), PRECISIONS)
    kw["accelerator"] = r.str("accelerator", dflt("accelerator"), ACCELERATORS + ("",))
    kw["security"] = r.str("security", dflt("security"), SECURITY_MODES)
    kw["arrival"] = r.str("arrival", dflt("arrival"), ARRIVAL_MODES)
    kw["power_mode"] = r.str("power_mode", dflt("power_mode"))
    kw["metrics_host"] = r.str("metrics_host", dflt("metrics_host"))
    kw["client_bind"] = ipc_from(r.str("client_bind", dflt("client_bind")), base_dir)
    for key in PATH_FIELDS:  # a key pasted into a key file's field reaches its check whole
        kw[key] = r.file_path(key, base_dir, dflt(key),
                              is_z85_key if key in ("secret_key_path", "public_key_path") else None)
    for key in ("emulate_capacity_flops", "arrival_rate_tasks_s"):
        kw[key] = r.num(key, dflt(key), lo=0)
    for key in ("emulate_links", "metrics_public", "online_capacity", "terminal"):
        kw[key] = r.bool(key, dflt(key))  # terminal: a source ignores it
    kw["replay_rows"] = r.str("replay_rows", dflt("replay_rows"), splits.ROW_SETS)
    cfg = NodeConfig(**check_limits(kw, where, ConfigError))
    _check_consistency(cfg, where)
    return cfg


def _check_consistency(cfg: NodeConfig, where: str) -> None:
    if not phase_fits(cfg.rounds_per_slot, cfg.round_interval_s, cfg.slot_length_s):
        raise ConfigError("%s.rounds_per_slot: configuration phase (%d rounds x %g s) must be shorter "
                          "than slot_length_s = %g" % (where, cfg.rounds_per_slot,
                                                       cfg.round_interval_s, cfg.slot_length_s))
    if cfg.arrival == "client" and cfg.role == "source":
        if not cfg.client_bind:
            raise ConfigError("%s.client_bind: needed when arrival = \"client\"" % where)
        check_endpoint(cfg.client_bind, where + ".client_bind", ConfigError)
        host = cfg.client_bind.split("://", 1)[1].rsplit(":", 1)[0]
        if cfg.client_keys_dir and cfg.security != "curve":
            raise ConfigError("%s.client_keys_dir: needs security = \"curve\"" % where)
        if (cfg.client_bind.startswith("tcp://") and not cfg.client_keys_dir
                and host not in ("127.0.0.1", "localhost", "[::1]")):
            # A plain client socket is local by design: never expose it without CURVE.
            raise ConfigError("%s.client_bind: must be ipc://PATH or a loopback tcp address "
                              "(127.0.0.1) unless client_keys_dir serves it over CURVE, got %r"
                              % (where, cfg.client_bind))
    if cfg.role == "source" and not cfg.successors:
        raise ConfigError("%s.peers: a source needs at least one stage-1 peer" % where)
    if cfg.role == "worker" and not cfg.sources:
        raise ConfigError("%s.peers: a worker needs the sources (stage 0 peers) it returns results to"
                          % where)
    if cfg.security == "curve":
        if not cfg.secret_key_path or not cfg.public_key_path:
            raise ConfigError("%s.security: \"curve\" needs secret_key_path and public_key_path" % where)
        missing = [p.id for p in cfg.peers if not p.public_key]
        if missing:
            raise ConfigError("%s.peers: security = \"curve\" needs public_key for %s"
                              % (where, ", ".join(missing)))
    if cfg.metrics_port and not cfg.metrics_public and not is_loopback_host(cfg.metrics_host):
        raise ConfigError("%s.metrics_host: %r is not a loopback address and the metrics endpoint "
                          "has no TLS or authentication; bind 127.0.0.1 (scrape through a proxy) or "
                          "set metrics_public = true to serve it to the network on purpose"
                          % (where, cfg.metrics_host))
    if cfg.emulate_links:
        slow = [p.id for p in cfg.peers if p.link_rate_bytes_s <= 0]
        if slow:
            raise ConfigError("%s.emulate_links: needs link_rate_bytes_s > 0 for peer(s) %s"
                              % (where, ", ".join(slow)))


def load_config(path: str) -> NodeConfig:
    """Read and validate a TOML node config; relative paths are taken from the file's folder.

    A file must state ``security`` ("curve" or "none"): the default of ``parse_config`` is for
    configs built in code (testbed, tests), never silently for a deployed agent.
    """
    try:
        raw = read_bounded(path, "config", CONFIG_MAX_BYTES)
    except FileFault as exc:
        if not os.path.lexists(path):
            raise ConfigError("%s: no such file" % path) from None
        raise ConfigError(str(exc).replace("config: " + path, path + ": config file", 1)) from None
    try:
        obj = load_toml(raw.decode("utf-8"), ConfigError, path + ": config")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s: not a TOML text file (not UTF-8 at byte %d); give the node config "
                          "written for this device" % (path, exc.start)) from None
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, an over-long integer, nesting
        raise ConfigError("%s: not valid TOML: %s" % (path, "nested too deep to be a node config" if
                          isinstance(exc, RecursionError) else str(exc).split("; use sys.")[0])) from None
    try:
        cfg = parse_config(obj, os.path.dirname(os.path.abspath(path)))
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from None
    from engines.bundle import not_a_bundle  # (numpy with it: every caller loads engines)
    if not_a_bundle(cfg.bundle):
        raise ConfigError("%s: config.bundle: %s %s" % (path, cfg.bundle, not_a_bundle(cfg.bundle)))
    if "security" not in obj:  # running unauthenticated must be a choice written down
        raise ConfigError('%s: security: missing; write security = "curve" (keys from `edge-agent '
                          'keys generate`) or security = "none" to run without authentication'
                          % path)
    return cfg


def dump_config(cfg: NodeConfig) -> str:
    """TOML text for ``cfg``; ``parse_config`` of it gives back an equal config. Paths are
    written as stored (absolute after parsing), so the file works from any folder."""
    return to_toml(cfg)
