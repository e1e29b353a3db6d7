"""Range checks of node-config values that are more than a type: node ids, endpoints, sizes.

Each check raises the caller's error class with one line naming the field, the value (cut
short when long) and what would be accepted, so a value that would be accepted by the parser
but fail later (a port ZeroMQ wraps around, a node id too long for a socket identity, a message
size libzmq cannot hold, two planes bound at one endpoint) is refused where it is written. A
relative ``ipc://`` path is taken from the config's folder (``ipc_from``) before its length is
checked. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type

from agent.config.addr_machine import (HostsTable, bind_scope, binds_clash,
                                    connect_reaches_bind)

NODE_ID_MAX_CHARS = 64
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# ZMQ_MAXMSGSIZE is an int64 and the transport sets twice this plus headroom on its sockets;
# a tensor message above 1 GiB is a mistake on any device this agent runs on.
MAX_MESSAGE_BYTES_LIMIT = 1 << 30
ENGINE_THREADS_MAX = 1024  # intra-op threads of one engine: far beyond any board's cores
ENGINE_BATCH_MAX = 8  # tasks in one engine call: the most a worker hands its engine at a time
MIN_INTERVAL_S = 0.001  # every period and timeout: below 1 ms the loop would only spin
# every period and timeout at most a day: a heartbeat or slot of 1e308 s never comes, and the
# agent never turns ready (its first heartbeat is what its neighbours wait for)
MAX_INTERVAL_S = 86400.0
# start-up timing runs (warm-up and timed) at most this: 10**9 runs never end, while 1000 runs
# of a stage at 0.5 s are 8 minutes
MAX_TIMING_RUNS = 1000
# tasks a node holds at most (max_queue_tasks), and so the most queued tasks a neighbour's
# heartbeat may claim: each keeps a tensor and its bookkeeping, so 2^20 (over a GiB even of
# 1 KiB tensors) is more than any device holds, and a claim of 2^53 steers routing on nothing
MAX_QUEUE_TASKS = 1 << 20
# rotated records files kept at most: each rotation looks at every slot (3,000,000 took 6 s)
MAX_KEEP_FILES = 1000
# a scenario's rates, sizes and capacities, and an emulated device's capacity: within these the
# model's products and powers (the step's curvature goes with the cube of a service time) stay
# far from float overflow; an emulated capacity of 1e-300 FLOP/s pads every task to forever
POSITIVE_RANGE = (1e-9, 1e24)
# Least capacity (FLOP/s) or link rate (bytes/s) a node config, topology or scenario may give,
# and a peer's DTO-EE status or stage report may carry (``agent.policies.dtoee.protocol``
# refuses one below it): far below any device or link, and the delay terms go as 1/mu^3 and
# beta/r, which overflow to inf (the joint solve's KKT system then NaN) for a denormal such as
# 1e-320. A 1e-3 FLOP/s worker had started, and its neighbours dropped every message it sent.
MIN_RATE = 1.0
RATE_RANGE = (MIN_RATE, POSITIVE_RANGE[1])  # capacities and link rates
# node-config fields that name a file or folder (besides bundle and state_dir): a relative one is
# relative to the file that gives it (the node config, or a topology's "agent" table)
PATH_FIELDS = ("engine_cache_dir", "capacity_profile", "replay_path", "secret_key_path",
               "public_key_path", "allowed_keys_dir", "client_keys_dir")
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z", re.ASCII)
_DOTTED_DIGITS = re.compile(r"[0-9.]+\Z", re.ASCII)
_IPC_PATH_MAX_BYTES = 107  # sun_path of an AF_UNIX socket, less the final NUL


def phase_fits(rounds_per_slot: float, round_interval_s: float, slot_length_s: float) -> bool:
    """DTO-EE's configuration phase (its rounds, each at most its stall timeout) ends within
    its slot: the one rule a node config and a testbed topology are checked by."""
    return rounds_per_slot * round_interval_s < slot_length_s


def check_limits(kw: Dict[str, Any], where: str, error: Type[Exception]) -> Dict[str, Any]:
    """The upper (and non-zero lower) bounds of node-config values the parser has read into
    ``kw`` (types already checked): every period and timeout (``*_interval_s``, ``*_timeout_s``,
    ``slot_length_s``) in [MIN_INTERVAL_S, MAX_INTERVAL_S], ``warmup_runs`` and ``timing_runs``
    at most MAX_TIMING_RUNS, ``records_keep_files`` at most MAX_KEEP_FILES,
    ``emulate_capacity_flops`` 0 (off) or in RATE_RANGE; and no two bound endpoints one
    (``check_distinct_binds``); ``arrival = "client"`` on a source only (a worker would bind
    the client socket unchecked: an unauthenticated port on any address). Returns ``kw``;
    errors read as the parser's: ``config.timing_runs: must be an integer in [1, 1000], got
    1000000000``."""
    if kw.get("arrival") == "client" and kw.get("role") != "source":
        raise error('%s.arrival: "client" is for a source (its clients send stage-1 inputs to '
                    'client_bind); a worker takes its tasks from its predecessors: remove it'
                    % where)
    limits = [(key, MIN_INTERVAL_S, MAX_INTERVAL_S, "") for key in sorted(kw)
              if key.endswith(("_interval_s", "_timeout_s")) or key == "slot_length_s"]
    limits += [("warmup_runs", 0, MAX_TIMING_RUNS, "an integer "),
               ("timing_runs", 1, MAX_TIMING_RUNS, "an integer "),
               ("records_keep_files", 1, MAX_KEEP_FILES, "an integer ")]
    if kw["emulate_capacity_flops"] != 0:
        limits.append(("emulate_capacity_flops",) + RATE_RANGE + ("",))
    for key, lo, hi, kind in limits:
        if not lo <= kw[key] <= hi:
            raise error("%s.%s: must be %sin [%g, %g], got %s"
                        % (where, key, kind, lo, hi, short(kw[key], 40)))
    check_distinct_binds(kw, where, error)
    return kw


def service_time_problem(flops: float, capacity_flops: float) -> str:
    """Why a stage of ``flops`` FLOP on a device of ``capacity_flops`` FLOP/s cannot be
    served ("" when it can): its service time, flops / capacity, is above MAX_INTERVAL_S, the
    most a peer accepts in a heartbeat (``agent.node.peerstate``), so the agent would start and
    its neighbours drop its every heartbeat. Callers raise it naming their capacity field."""
    seconds = flops / capacity_flops
    if seconds <= MAX_INTERVAL_S:
        return ""
    need = flops / MAX_INTERVAL_S  # shown rounded up: the figure printed is one that passes
    step = 10.0 ** (math.floor(math.log10(need)) - 2)
    return ("%g FLOP at %g FLOP/s is a service time of %.3g s, above a day (%g s, the most a "
            "peer accepts); give at least %.3g FLOP/s"
            % (flops, capacity_flops, seconds, MAX_INTERVAL_S, math.ceil(need / step) * step))


def check_rate(value: float, where: str, error: Callable[[str], Exception],
               zero: str = "") -> float:
    """``value``, a capacity (FLOP/s) or link rate (bytes/s), when in RATE_RANGE, or 0 when
    ``zero`` says what 0 means (``"unknown"``); else ``error("WHERE: must be 0 (unknown) or
    in [1, 1e+24], got 0.5")``. A peer refuses a report below MIN_RATE, so a smaller value
    would start an agent whose neighbours drop what it says."""
    if (zero and value == 0) or RATE_RANGE[0] <= value <= RATE_RANGE[1]:
        return value
    raise error("%s: must be %sin [%g, %g], got %s"
                % ((where, "0 (%s) or " % zero if zero else "") + RATE_RANGE + (short(value),)))


def check_service_times(capacity_flops: Optional[float], stage_flops: Mapping[int, float],
                        where: str, error: Callable[[str], Exception]) -> None:
    """Raise ``error("WHERE: stage H: ...")`` for the first of a worker's stages
    (``{stage: flops}``) that its capacity (None or 0: measured, not checked) serves in over
    a day (``service_time_problem``)."""
    for stage, flops in sorted(stage_flops.items()) if capacity_flops else ():
        why = service_time_problem(flops, capacity_flops)
        if why:
            raise error("%s: stage %d: %s" % (where, stage, why))


def check_peer_stages(peers: Sequence[Any], num_stages: int, bundle: str,
                      error: Callable[[str], Exception]) -> None:
    """Raise ``error("peers[I].stage: ...")`` for the first peer serving a stage beyond the
    bundle's ``num_stages`` (stage or last_stage): no task is ever sent to it nor comes from
    it, so a typo (stage 7 of a 4-stage bundle) would leave that device out without a word."""
    for i, p in enumerate(peers):
        first, last = p.stages
        if last > num_stages:
            raise error("peers[%d].%s: peer %s serves stage %s, but the bundle (%s) has stages "
                        "1..%d; give it a stage in 1..%d (0: a source), or remove the peer"
                        % (i, "stage" if first > num_stages else "last_stage", p.id,
                           first if first == last else "%d..%d" % (first, last), bundle,
                           num_stages, num_stages))


def check_distinct_binds(kw: Dict[str, Any], where: str, error: Type[Exception]) -> None:
    """No two endpoints a node binds (``control_bind``, ``data_bind``, ``client_bind`` when
    ``arrival`` is "client", and the metrics server's ``metrics_host``:``metrics_port`` when
    set) are one, compared as bound (a relative ``ipc://`` path already taken from the config's
    folder): an ipc:// bind replaces the socket file of the other plane, which is then
    unreachable, and a tcp:// or inproc:// one fails at start-up with a line that sends one
    looking for another process. Two tcp:// hosts on one port are compared by the machine's
    rule (``agent.config.addr_machine``, names by their text: no file or DNS is read): one address
    however written (``localhost`` is 127.0.0.1, ``[::ffff:127.0.0.1]`` is 127.0.0.1,
    ``[0:0::1]`` is ``[::1]``), and a wildcard host (``*``, ``[::]``; ``0.0.0.0``: the IPv4
    ones) takes its port on every address. Wildcards (``ipc://*``, port ``*`` or 0) bind a
    fresh address each and clash with nothing. A peer's address that surely reaches one of
    these binds (``addr_machine.connect_reaches_bind``: ``tcp://localhost:P`` when this node
    binds ``tcp://*:P``) is this node itself, and refused too."""
    keys = ("control_bind", "data_bind") + (("client_bind",) if kw.get("arrival") == "client"
                                            else ())
    binds = [(key, kw[key]) for key in keys if isinstance(kw.get(key), str) and kw[key]]
    if kw.get("metrics_port"):
        host = str(kw.get("metrics_host", ""))
        host = "[%s]" % host if ":" in host and not host.startswith("[") else host
        binds.append(("metrics_port", "tcp://%s:%s" % (host or "*", kw["metrics_port"])))
    for i, (key, value) in enumerate(binds):
        for other, earlier in binds[:i]:
            how = _bind_clash(value, earlier)
            shown = value if key != "metrics_port" else earlier
            if how == "same":
                raise error("%s.%s: the same endpoint as %s (%s): %seach plane needs its own"
                            % (where, key, other, shown, "" if value == earlier else
                               "%s and %s bind one address; " % (earlier, value)))
            if how == "port":
                raise error("%s.%s: %s and %s (%s) take the same port on this machine (a "
                            "wildcard host binds every address): give each its own port"
                            % (where, key, value, other, earlier))
    for i, peer in enumerate(kw.get("peers", ())):  # a peer at one of our endpoints is us
        for field in ("control_address", "data_address"):
            address = getattr(peer, field, "")
            own = next(((k, v) for k, v in binds if _reaches(address, v)), None)
            if own:
                raise error("%s.peers[%d].%s: %s is this node's own %s%s: give the address of "
                            "peer %s" % (where, i, field, address, own[0], "" if own[1] ==
                                         address else " (%s)" % own[1], peer.id))


_NAMES_AS_TEXT: HostsTable = {}  # a config check reads no hosts file: a name is its own text


def _tcp_port(endpoint: str) -> Optional[Tuple[str, str]]:
    """``(host, port)`` of a tcp:// endpoint that binds a fixed port (brackets kept, as
    ``addr_machine`` takes them); None for another scheme or port ``*`` or 0 (a fresh port)."""
    scheme, _, rest = endpoint.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or port in ("*", "0"):
        return None
    return host, port


def _bind_clash(a: str, b: str) -> str:
    """How two bound endpoints collide: "same" (one address and port, or one ipc path or
    inproc name), "port" (one tcp port where a wildcard host takes every address), or ""."""
    tcp_a, tcp_b = _tcp_port(a), _tcp_port(b)
    if tcp_a is None or tcp_b is None:
        bound = _bound_as(a)
        return "same" if bound and bound == _bound_as(b) else ""
    (host_a, port_a), (host_b, port_b) = tcp_a, tcp_b
    if port_a != port_b or not binds_clash(host_a, host_b, _NAMES_AS_TEXT):
        return ""
    same = bind_scope(host_a, _NAMES_AS_TEXT) == bind_scope(host_b, _NAMES_AS_TEXT)
    return "same" if same else "port"


def _reaches(address: str, bound: str) -> bool:
    """Whether a connect to ``address`` surely reaches this node's bind ``bound``: the same
    ipc path or inproc name, or a tcp port whose host reaches the bind's on this machine."""
    tcp_a, tcp_b = _tcp_port(address), _tcp_port(bound)
    if tcp_a is None or tcp_b is None:
        return bool(_bound_as(address)) and _bound_as(address) == _bound_as(bound)
    return tcp_a[1] == tcp_b[1] and connect_reaches_bind(tcp_a[0], tcp_b[0], _NAMES_AS_TEXT)


def _bound_as(endpoint: str) -> str:
    """``endpoint`` as the address it binds, to compare two ("" for a wildcard): an ipc://
    file path normalised (``/run//x.sock`` is ``/run/x.sock``); a tcp:// one as written (its
    hosts are compared by ``addr_machine``), "" with port ``*`` or 0."""
    scheme, _, rest = endpoint.partition("://")
    if scheme == "ipc" and rest in ("", "*"):
        return ""
    if scheme == "ipc" and not rest.startswith("@"):  # an abstract name is no file path
        return "ipc://" + os.path.normpath(rest)
    if scheme == "tcp" and _tcp_port(endpoint) is None:
        return ""
    return endpoint


def short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters (a 20,000-character id stays one line)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return "%s...%s (%d characters)" % (text[:limit - 15], text[-10:], len(str(value)))


def check_node_id(value: str, where: str, error: Type[Exception]) -> str:
    """A node id: 1-64 characters of letters, digits, '.', '_', '-', starting with a letter or
    digit (it is a socket identity and a topic prefix)."""
    if not isinstance(value, str) or not value or len(value) > NODE_ID_MAX_CHARS \
            or not _NODE_ID.match(value):
        raise error("%s: must be 1-%d characters of letters, digits, '.', '_' or '-', starting "
                    "with a letter or digit, got %s" % (where, NODE_ID_MAX_CHARS, short(value)))
    return value


def check_text_path(path: str, where: str, error: Type[Exception]) -> str:
    """``path``, when its name is UTF-8: one with other bytes (held as lone surrogates) cannot
    be written into a node config or a JSON file, which are UTF-8 text, so a command that
    writes one naming it is refused before it starts."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise error("%s: %s is not a UTF-8 name (byte 0x%02x): the node configs that name it "
                    "are UTF-8 text; rename it or give another path"
                    % (where, shown, ord(path[exc.start]) & 0xff)) from None
    return path


def check_endpoint(value: str, where: str, error: Type[Exception]) -> str:
    """A ZeroMQ endpoint: tcp://HOST:PORT (port 1-65535), ipc://PATH (a socket path short
    enough for AF_UNIX) or inproc://NAME."""
    scheme, sep, rest = value.partition("://") if isinstance(value, str) else ("", "", "")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest:
        raise error("%s: must be a ZeroMQ endpoint like tcp://HOST:PORT, got %s"
                    % (where, short(value)))
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise error("%s: must be tcp://HOST:PORT, got %s" % (where, short(value)))
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise error("%s: port must be a number in 1..65535, got %s in %s"
                        % (where, short(port), short(value)))
        if not _is_tcp_host(host):
            raise error("%s: host must be a host or interface name, an IPv4 address, an IPv6 "
                        "address in brackets ([::1]) or * to bind all, got %s in %s"
                        % (where, short(host), short(value)))
    elif scheme == "ipc" and len(rest.encode("utf-8")) > _IPC_PATH_MAX_BYTES:
        raise error("%s: an ipc:// socket path can be at most %d bytes, got %d in %s"
                    % (where, _IPC_PATH_MAX_BYTES, len(rest.encode("utf-8")), short(value)))
    return value


def ipc_from(endpoint: str, base_dir: str) -> str:
    """``endpoint`` with a relative ``ipc://`` path taken from ``base_dir`` (the node config's
    folder, as its other relative paths are; ``~`` expanded). ZeroMQ itself takes it from the
    working folder of the process that binds or connects, so agents started from different
    folders (systemd starts them in /) would never meet. Absolute, abstract (``ipc://@NAME``)
    and wildcard (``ipc://*``) paths and other schemes are returned as given."""
    if not isinstance(endpoint, str) or not endpoint.startswith("ipc://"):
        return endpoint
    path = endpoint[len("ipc://"):]
    if not path or path == "*" or path.startswith(("/", "@")):
        return endpoint
    return "ipc://" + os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def check_endpoint_from(value: str, where: str, base_dir: str, error: Type[Exception]) -> str:
    """``check_endpoint`` of ``value`` as the agent uses it: a relative ``ipc://`` path taken
    from ``base_dir`` first (``ipc_from``), so the socket path's length is that of the path
    bound. Returns that endpoint; one too long once resolved is named with where it came from."""
    full = ipc_from(value, base_dir)
    if full == value:
        return check_endpoint(value, where, error)
    try:
        return check_endpoint(full, where, error)
    except error as exc:
        raise error("%s (the relative %s is taken from the config's folder; give a shorter "
                    "absolute path)" % (exc, short(value))) from None


def _is_tcp_host(host: str) -> bool:
    """A host ZeroMQ can resolve or bind: ``*``, a name (DNS or interface, ASCII letters,
    digits, '.', '_', '-'), an IPv4 address or an IPv6 address (bracketed, or bare as libzmq
    also reads it), with an optional ``%zone`` on a link-local IPv6 address."""
    if host == "*":
        return True
    if host.startswith("[") or host.endswith("]") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        addr, pct, zone = inner.partition("%")
        if pct and not _HOST_NAME.match(zone):
            return False
        try:
            return isinstance(ipaddress.ip_address(addr), ipaddress.IPv6Address)
        except ValueError:
            return False
    if not _HOST_NAME.match(host) or len(host) > 253:
        return False
    if _DOTTED_DIGITS.match(host):  # all digits and dots: it must be an IPv4 address
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); names are not resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
