"""A node's metrics endpoint through its life (``agent.node.build``): starting, serving, draining.

``MetricsPort`` serves the endpoint as soon as the state directory is locked, before the slow
steps (a worker's engines loaded and timed: a TensorRT plan build takes minutes). A
``metrics_port`` another process holds fails the start at once, with the server's own line
(``metrics_server.serve_fault``, exit 78); and a starting node answers a scrape (``edge-agent
status``) with ``edge_agent_node_state{state="starting"} 1``, what it is (``report_node``), its
newest warning and the counts a node config fixes at 0 (``known_series``), where a refused
connection could not be told from a dead node. A bind held without listening (as before) did
not keep a second starting agent off the port either: both sockets have ``SO_REUSEADDR``, and
Linux lets two such sockets bind one port while neither listens.

``serve`` hands the endpoint to the node; ``serving`` says the node serves, once its sockets
are bound, and makes the loop's SIGTERM/SIGINT handler, which says it drains.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from agent.ops.metrics import serve_metrics


class MetricsPort:
    """The metrics endpoint of node config ``cfg``, served from now on in state "starting"
    (``NullMetrics`` where ``metrics_port = 0``: metrics off); ``earlier`` is the newest
    warning logged so far. ``UsageError`` (exit 78) when it cannot be bound: a port in use, an
    address that is none of this machine's, a host name that does not resolve. Closed on
    leaving a ``with`` block by a fault, or without ``serve``."""

    def __init__(self, cfg: Any, earlier: Optional[Tuple[str, str, float]] = None) -> None:
        self.cfg = cfg
        self.metrics = serve_metrics(cfg, earlier, "starting")
        self._handed = False
        report_node(cfg, self.metrics)  # `status` names a starting node's role and stage

    def serve(self) -> Any:
        """The node's metrics, served since start-up, handed to the node (which closes them)."""
        self._handed = True
        return self.metrics

    def close(self) -> None:
        """Stop the endpoint, unless ``serve`` handed it to the node."""
        if not self._handed:
            self.metrics.close()

    def __enter__(self) -> "MetricsPort":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:  # the node was never returned: nobody else closes them
            self._handed = False
        self.close()


def report_node(cfg: Any, metrics: Any) -> None:
    """What the agent is and every configured neighbour (0 until heard); a worker's power
    mode is reported (and watched) by ``agent.node.powerwatch``."""
    metrics.node_info(cfg.role, cfg.stage, cfg.policy)
    for p in cfg.peers:
        metrics.neighbour_alive(p.id, False)


def serving(node: Any, metrics: Any) -> Callable[..., None]:
    """Say the node serves (its sockets bound; ``node``'s loop about to run), and return its
    SIGTERM/SIGINT handler: metrics say "draining" from the signal until the process ends,
    and the loop stops (after its drain, up to ``drain_timeout_s``)."""
    metrics.node_state("serving")

    def on_stop(*_: Any) -> None:
        metrics.node_state("draining")  # first: a plain assignment, safe in a handler
        node.stop()
    return on_stop
