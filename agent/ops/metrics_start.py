"""A node's metrics endpoint through its start-up (``agent.node.build``).

``MetricsPort`` binds the endpoint's address as soon as the state directory is locked, before
the slow steps (a worker's engines loaded and timed: a TensorRT plan build takes minutes), so
a ``metrics_port`` another process holds fails the start at once, with the line the server's
own bind would give (``metrics_server.serve_fault``, exit 78). The address is held bound, not
listening (``metrics_server.hold``): a scrape meanwhile (``edge-agent status``) is refused as
before, and nothing is served until the node is built; ``serve`` then lets the hold go and
starts the server on the same address at once (``serve_metrics``, which takes over the
warnings logged so far). ``report_node`` gives the series that say what the node is.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from agent.errors import UsageError
from agent.ops.metrics import serve_metrics
from agent.ops.metrics_server import hold, serve_fault


class MetricsPort:
    """The metrics address of node config ``cfg`` held from now until ``serve`` or ``close``
    (nothing held where ``metrics_port = 0``: metrics off); ``UsageError`` (exit 78) when it
    cannot be bound: a port in use, an address that is none of this machine's, a host name
    that does not resolve."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._held: Any = None
        if not cfg.metrics_port:
            return
        try:
            self._held = hold(cfg.metrics_host, cfg.metrics_port)
        except (OSError, OverflowError) as exc:  # serve_metrics's causes, found now
            raise UsageError(serve_fault(cfg.metrics_host, cfg.metrics_port, exc)) from None

    def serve(self, earlier: Optional[Tuple[str, str, float]] = None) -> Any:
        """The node's metrics served (``serve_metrics``: ``earlier`` is its newest warning so
        far) on the address held until now."""
        self.close()  # the server binds it again a moment later, from this same process
        return serve_metrics(self.cfg, earlier)

    def close(self) -> None:
        """Let the address go (again: nothing)."""
        if self._held is not None:
            self._held.server_close()
            self._held = None

    def __enter__(self) -> "MetricsPort":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def report_node(cfg: Any, metrics: Any) -> None:
    """What the agent is and every configured neighbour (0 until heard); a worker's power
    mode is reported (and watched) by ``agent.node.powerwatch``."""
    metrics.node_info(cfg.role, cfg.stage, cfg.policy)
    for p in cfg.peers:
        metrics.neighbour_alive(p.id, False)
