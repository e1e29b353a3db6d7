"""The fleet at a glance: every node's metrics endpoint read and put in one table.

Each agent serves Prometheus text on ``metrics_host:metrics_port`` (``agent.ops.metrics``);
``read_node`` fetches one endpoint and keeps what an operator looks at: whether it answers,
power mode, capacity, queues, the policy it runs, routing shares, exit thresholds, drops by
reason (with the clients refused at a source's CURVE client endpoint) and which neighbours it
hears; nodes running different policies are named in one warning line under the table. Role and
stage come from the fleet manifest (``fleet render``'s ``fleet.json``) when there is one.

A node whose endpoint does not answer may still run: its metrics off (``metrics_port = 0``) or
on another port than the manifest's. The nodes that answer say whom they hear
(``edge_agent_neighbour_alive``), so such a node's line names those that hear it
(``heard_by``), and a refused endpoint is not taken for a dead agent.

An agent answers from start-up on (``edge_agent_node_state``): a node ``starting`` (engines
loading) or ``draining`` (stopping) shows so in the alive column, with a line on what it does.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections import defaultdict
from typing import Any, Dict, List, Mapping

from agent.ops.metrics import SOURCE_OUTCOMES

PREFIX = "edge_agent_"
# an agent's metrics text is a few KiB; an endpoint sending more is something else
ANSWER_MAX_BYTES = 4 << 20


def parse_metrics(text: str) -> Dict[str, List[tuple]]:
    """``{series name: [(labels, value), ...]}`` from Prometheus text (``_total`` kept)."""
    out: Dict[str, List[tuple]] = defaultdict(list)
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for item in _split_labels(rest.rstrip("}")):
            k, _, v = item.partition("=")
            labels[k.strip()] = v.strip().strip('"')
        try:
            v = float(value)
        except ValueError:
            continue
        if math.isfinite(v):  # NaN/Inf is no count, mode or time a row can show
            out[name[len(PREFIX):]].append((labels, v))
    return dict(out)


def _split_labels(text: str) -> List[str]:
    items, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return items


def summarise(series: Mapping[str, List[tuple]]) -> Dict[str, Any]:
    """What the table shows of one node's series."""
    def by(name: str, label: str) -> Dict[str, float]:
        return {l.get(label, ""): v for l, v in series.get(name, [])}

    drops = {k: int(v) for k, v in by("dropped_frames_total", "reason").items() if v}
    refused = sum(v for _, v in series.get("client_refused_total", []))
    if refused:
        drops["client_refused"] = int(refused)
    cap = [v for _, v in series.get("capacity_flops", [])]
    stages = sorted({l.get("stage") for l, _ in series.get("tasks_in_total", [])} - {None})
    info = series.get("node_info", [({}, 0.0)])[0][0]
    return {
        # the node id it says it is (an agent of an earlier version, without node_info, says
        # it on every other series)
        "node_reported": info.get("node") or _series_node(series),
        "role_reported": info.get("role", ""),
        "protocol": info.get("protocol", ""),  # the wire protocol (none said: an older agent)
        "policy": info.get("policy", ""),  # the policy it runs: a fleet runs one
        "stage_reported": info.get("stage", ""),
        # starting, serving or draining (an earlier agent, without the series: serving)
        "state": next((k for k, v in by("node_state", "state").items() if v == 1), "serving"),
        "power_mode": next((m for m, v in by("power_mode", "mode").items() if v == 1), ""),
        "capacity_flops": cap[0] if cap else None,
        "queues": {k: int(v) for k, v in by("queue_length", "queue").items()},
        "routing": by("routing_probability", "dst"),
        "thresholds": by("exit_threshold", "stage"),
        "drops": drops,
        "neighbours": {k: bool(v) for k, v in by("neighbour_alive", "peer").items()},
        "tasks_in": int(sum(v for _, v in series.get("tasks_in_total", []))),
        "tasks_refused": int(sum(v for _, v in series.get("tasks_refused_total", []))),
        "source_tasks": {k: int(v) for k, v in by("source_tasks_total", "outcome").items()},
        # an agent of an earlier version names it without the unit
        "last_warning": _newest_warning(series.get("last_warning_timestamp_seconds")
                                        or series.get("last_warning", [])),
        "stages_seen": stages,
    }


def _series_node(series: Mapping[str, List[tuple]]) -> str:
    """The ``node`` label of the first series that has one ("" when none has)."""
    for labels, _ in (v for vs in series.values() for v in vs):
        if labels.get("node"):
            return labels["node"]
    return ""


def _newest_warning(samples: List[tuple]) -> Dict[str, Any]:
    """``{level, message, wall}`` of the newest warning series ({} when none was logged)."""
    if not samples:
        return {}
    labels, wall = max(samples, key=lambda lv: lv[1])
    return {"level": labels.get("level", ""), "message": labels.get("message", ""), "wall": wall}


def _fmt_warning(w: Mapping[str, Any], width: int = 60) -> str:
    if not w:
        return "-"
    text = "%s %s %s" % (time.strftime("%H:%M:%S", time.localtime(w["wall"])), w["level"],
                         w["message"])
    return text if len(text) <= width else text[:width - 3] + "..."


def fetch_text(url: str, timeout_s: float) -> str:
    """The body at ``url``, read whole within ``timeout_s`` (the socket's timeout bounds each
    read only: an endpoint trickling bytes would hold a reader for ever) and at most
    ``ANSWER_MAX_BYTES``; ``TimeoutError`` or ``ValueError`` otherwise."""
    deadline = time.monotonic() + timeout_s
    chunks, size = [], 0
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                return b"".join(chunks).decode("utf-8", "replace")
            size += len(chunk)
            if size > ANSWER_MAX_BYTES:
                raise ValueError("answered over %d MiB: not an agent's metrics"
                                 % (ANSWER_MAX_BYTES >> 20))
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError("no complete answer within %g s" % timeout_s)


def read_node(url: str, timeout_s: float = 2.0) -> Dict[str, Any]:
    """One node's status from its metrics URL; ``alive`` False with ``error`` when it does not
    answer (in full, within ``timeout_s``)."""
    try:
        text = fetch_text(url, timeout_s)
    except Exception as exc:  # refused, timed out, DNS: the node is not reachable
        return {"alive": False, "error": _why(exc), "url": url}
    series = parse_metrics(text)
    if not series:  # an agent exports its series from the moment it serves (known_series)
        return {"alive": False, "url": url, "error": "answered, but with no %s series: %s"
                % (PREFIX, _NOT_AGENT)}
    out = summarise(series)
    out.update(alive=True, error="", url=url)
    return out


_NOT_AGENT = "not an agent's metrics endpoint (another service on this port?)"


def _why(exc: BaseException) -> str:
    """One line on why an endpoint gave no metrics; an answer that is not HTTP, or an HTTP
    error, is named as another service's."""
    import http.client
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return "answered HTTP %d %s: %s" % (exc.code, exc.reason, _NOT_AGENT)
    if isinstance(exc, http.client.BadStatusLine) and not isinstance(
            exc, http.client.RemoteDisconnected):  # its text is the line that came
        return "answered %r, not HTTP: %s" % (str(exc)[:40], _NOT_AGENT)
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__  # one line, never empty


def _read_as(n: str, url: str, timeout_s: float, named: bool = True) -> Dict[str, Any]:
    """``read_node(url)``, but an answer from another node (its ``node_info`` names another
    id: a stale tunnel or a wrong endpoint) counts as no answer, not as ``n``'s figures
    (``named`` False: ``n`` is only what the endpoint answered, ``nodes_from_endpoints``)."""
    st = read_node(url, timeout_s)
    other = st.get("node_reported")
    if named and st.get("alive") and other and other != n:
        return {"alive": False, "url": url,
                "error": "answered as node %s, not %s (a tunnel or endpoint of another node?)"
                         % (other, n)}
    return st


def fleet_status(nodes: Mapping[str, Mapping[str, Any]], timeout_s: float = 2.0
                 ) -> Dict[str, Dict[str, Any]]:
    """Every node's status; ``nodes`` maps node id -> {metrics URL, role, stage, ...}. A node
    whose metrics listen on its device's loopback (``metrics_local``, the local end of the
    tunnel ``fleet render`` names) is read through that tunnel when it is open, else at its
    URL; an answer naming another node is no answer (``_read_as``). The nodes are read at
    once, each on its own thread: nodes that do not answer cost one timeout, not one each. An
    entry ``keyed_by_answer`` (``nodes_from_endpoints``) is keyed by the node id its answer
    gives, by its own key when it does not answer or another entry has that id: that one read
    both names it and gives its figures."""
    got: Dict[str, Dict[str, Any]] = {}  # a thread past the bound below may still write here
    failed: List[BaseException] = []

    def read(n: str, meta: Mapping[str, Any]) -> None:
        try:
            got[n] = _node_status(n, meta, timeout_s)
        except BaseException as exc:  # raised again on the caller's thread
            failed.append(exc)

    threads = [threading.Thread(target=read, args=(n, meta), daemon=True)
               for n, meta in nodes.items()]
    for t in threads:
        t.start()
    # one bound for all: a name lookup or headers sent a byte at a time are outside the
    # body's deadline (``fetch_text``); a node read twice (tunnel, then URL) takes two
    end = time.monotonic() + 2 * timeout_s + 1.0
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    if failed:
        raise failed[0]
    late = {"alive": False, "error": "no complete answer within %g s" % (2 * timeout_s + 1.0)}
    out = {}  # type: Dict[str, Dict[str, Any]]
    for n, meta in nodes.items():
        st = dict(got.get(n) or dict(late, url=meta.get("metrics", ""), state=""))
        said = st.get("node_reported") if meta.get("keyed_by_answer") and st.get("alive") else ""
        out[said if said and said not in out and said not in nodes else n] = st
    for n, st in out.items():
        if not st.get("alive"):
            st["heard_by"] = heard_by(out, n)
    return out


def _node_status(n: str, meta: Mapping[str, Any], timeout_s: float) -> Dict[str, Any]:
    """``fleet_status`` of one node."""
    st = {"alive": False}  # type: Dict[str, Any]
    if meta.get("metrics_local") and meta.get("metrics_tunnel"):
        st = _read_as(n, "http://%s/metrics" % meta["metrics_local"], timeout_s)
    if not st.get("alive"):
        st = _read_as(n, meta["metrics"], timeout_s, not meta.get("named_by_answer")) \
            if meta.get("metrics") else {
            "alive": False, "error": "no metrics endpoint (metrics_port = 0)", "url": ""}
    # the manifest's word first; else what the agent says of itself (an older one: guessed)
    st["role"] = (meta.get("role") or st.get("role_reported")
                  or ("worker" if st.get("capacity_flops") else "?"))
    st["stage"] = meta.get("stage", st.get("stage_reported", ""))
    st.setdefault("policy", "")  # what the agent says it runs ("": silent or no answer)
    st.setdefault("state", "")  # what the agent says it is doing ("": no answer)
    st["checked_wall"] = time.time()
    if not st.get("alive") and isinstance(meta.get("metrics_tunnel"), str) \
            and meta["metrics_tunnel"]:  # listens on the device's loopback (fleet render)
        st["metrics_tunnel"] = meta["metrics_tunnel"]
        st["metrics_local"] = str(meta.get("metrics_local") or "127.0.0.1:PORT")
    return st


def heard_by(status: Mapping[str, Mapping[str, Any]], node: str) -> List[str]:
    """The answering nodes that report ``node`` alive (their ``edge_agent_neighbour_alive``
    series for it is 1), sorted."""
    return sorted(m for m, s in status.items()
                  if m != node and s.get("alive") and s.get("neighbours", {}).get(node))


def _fmt_tasks(s: Mapping[str, Any]) -> str:
    """A source's created/completed/lost/rejected, a worker's received/refused."""
    counts = s.get("source_tasks") or {}
    if counts:
        return "/".join(str(counts.get(k, 0)) for k in SOURCE_OUTCOMES)
    if s.get("role") == "source":
        return "-"  # an agent of an earlier version exports no task counts
    return "%d/%d" % (s.get("tasks_in", 0), s.get("tasks_refused", 0))


def _fmt_routing(r: Mapping[str, float]) -> str:
    return " ".join("%s %.2f" % (k, v) for k, v in sorted(r.items())) or "-"


def format_status(status: Mapping[str, Mapping[str, Any]]) -> str:
    """The status table (one row per node) and a line per node that does not answer."""
    head = ("node", "alive", "role", "stage", "mode", "capacity FLOP/s", "queue", "hears",
            "tasks", "policy", "routing", "thresholds", "drops", "last warning")
    rows = [head]
    notes = []
    for n, s in status.items():
        if not s.get("alive"):
            rows.append((n, "NO", str(s.get("role", "")), str(s.get("stage", "")), "-", "-", "-",
                         "-", "-", "-", "-", "-", "-", "-"))
            notes.append(_not_answering(n, s))
            continue
        nb = s.get("neighbours", {})
        cap = s.get("capacity_flops")
        state = s.get("state") or "serving"  # the alive column: yes (serving), or the state
        notes += [] if state == "serving" else [_not_serving(n, s, state)]
        rows.append((
            n, {"serving": "yes"}.get(state, state), str(s.get("role", "")),
            str(s.get("stage", "")), s.get("power_mode") or "-",
            "%.3g" % cap if cap else "-",
            "/".join(str(v) for _, v in sorted(s.get("queues", {}).items())) or "-",
            "%d/%d" % (sum(nb.values()), len(nb)), _fmt_tasks(s), s.get("policy") or "-",
            _fmt_routing(s.get("routing", {})),
            " ".join("%s:%.2f" % kv for kv in sorted(s.get("thresholds", {}).items())) or "-",
            " ".join("%s=%d" % kv for kv in sorted(s.get("drops", {}).items())) or "0",
            _fmt_warning(s.get("last_warning", {}))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    alive = [s.get("state") for s in status.values() if s.get("alive")]
    busy = ", ".join("%d %s" % (alive.count(k), k) for k in sorted(set(alive) - {"serving"}))
    lines.append("%d/%d nodes answering%s; queue = %s; hears = neighbours heard / configured; "
                 "tasks = created/completed/lost/rejected (source), received/refused (worker)"
                 % (len(alive), len(status), " (%s)" % busy if busy else "", "/".join(sorted(
                     next((s.get("queues", {}) for s in status.values() if s.get("queues")),
                          {}))) or "-"))
    mixed = policies_line(status)
    return "\n".join(lines + ([mixed] if mixed else []) + notes)


def _not_serving(n: str, s: Mapping[str, Any], state: str) -> str:
    """The line on a node that answers but does not serve (yet, or any more)."""
    worker = s.get("role") == "worker"
    return "%s: %s" % (n, {  # a state of a later version: its name only
        "starting": "starting: %s; not serving yet" % (
            "loading and timing its stage engine(s) (a TensorRT plan build takes minutes)"
            if worker else "reading its bundle and replay set"),
        "draining": "draining: stopping; %s, for up to its drain_timeout_s"
                    % ("finishes the tasks it holds, refuses new ones" if worker
                       else "creates no task, waits for those in flight")}.get(state, state))


def _not_answering(n: str, s: Mapping[str, Any]) -> str:
    """The line on a node that does not answer: why, its URL, the answering nodes that still
    hear it (it runs: its metrics are off or elsewhere), and when its metrics listen on the
    device's loopback (``fleet.json``'s ``metrics_tunnel``), the tunnel that reaches them."""
    line = "%s: %s (%s)" % (n, s.get("error"), s.get("url"))
    hear = s.get("heard_by") or []
    if hear and s.get("url"):
        line += ("; but %s hear%s it: the agent runs, its metrics off (metrics_port = 0) or on "
                 "another port?" % (", ".join(hear), "s" if len(hear) == 1 else ""))
    elif hear:  # no endpoint to read (metrics_port = 0 in the render)
        line += "; %s hear%s it: the agent runs" % (", ".join(hear),
                                                     "s" if len(hear) == 1 else "")
    if s.get("metrics_tunnel"):
        line += ("; its metrics listen on the device's loopback only: tunnel (%s) and use "
                 "--endpoints %s" % (s["metrics_tunnel"], s.get("metrics_local")))
    return line


def policies_line(status: Mapping[str, Mapping[str, Any]]) -> str:
    """A WARNING line naming which nodes run which policy when the answering nodes run more
    than one ("" when they agree; a node that does not say, an older agent, is left out)."""
    by_policy: Dict[str, List[str]] = defaultdict(list)
    for n, s in status.items():
        if s.get("alive") and s.get("policy"):
            by_policy[s["policy"]].append(n)
    if len(by_policy) < 2:
        return ""
    return ("WARNING: nodes run different policies: %s; a fleet runs one policy (each drops the "
            "other's control messages): render every node with one --policy and restart them all"
            % "; ".join("%s on %s" % (p, ", ".join(sorted(ns)))
                        for p, ns in sorted(by_policy.items())))


def nodes_from_endpoints(urls: List[str]) -> Dict[str, Dict[str, Any]]:
    """Node entries for bare metrics endpoints (``HOST:PORT`` or URLs), keyed by the text
    given and marked ``keyed_by_answer`` (and ``named_by_answer``: no answer is another node's):
    ``fleet_status``'s read of each names it by the ``node`` label it serves, so an endpoint is
    read once per round, within ``--timeout``.
    ``UsageError`` for one without a host and a port (a bare host would be read as port 80 and
    only ever be refused)."""
    from urllib.parse import urlsplit

    from agent.errors import UsageError

    out: Dict[str, Dict[str, Any]] = {}
    for u in urls:
        url = u if "://" in u else "http://%s/metrics" % u
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a port that is no number in 0..65535
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or not port:
            raise UsageError("--endpoints: %r: give HOST:PORT or http://HOST:PORT/metrics, with "
                             "a port in 1..65535" % u)
        if not url.rstrip("/").endswith("/metrics"):
            url = url.rstrip("/") + "/metrics"
        out[u] = {"metrics": url, "named_by_answer": True, "keyed_by_answer": True}
    return out
