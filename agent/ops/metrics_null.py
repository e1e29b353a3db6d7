"""``NullMetrics``: the methods of ``agent.ops.metrics.AgentMetrics``, doing nothing, for agents
run without a metrics endpoint and for tests (``agent.ops.metrics`` exports it too)."""

from __future__ import annotations

from typing import Iterable, Optional


class NullMetrics:
    """Same methods as ``AgentMetrics``, doing nothing."""

    port = None

    def __init__(self, node_id: str = "", registry=None) -> None:
        self.node_id = str(node_id)

    def task_in(self, stage) -> None:
        pass

    def task_out(self, stage) -> None:
        pass

    def task_exited(self, stage) -> None:
        pass

    def queue_length(self, name: str, n: int) -> None:
        pass

    def service_time(self, seconds: float) -> None:
        pass

    def capacity(self, flops: float) -> None:
        pass

    def routing(self, dst: str, p: float) -> None:
        pass

    def threshold(self, stage, c: float) -> None:
        pass

    def dropped(self, reason: str) -> None:
        pass

    def write_failed(self, what: str, n: int = 1) -> None:
        pass

    def refused(self, reason: str) -> None:
        pass

    def source_task(self, outcome: str) -> None:
        pass

    def node_info(self, role: str, stage: int, policy: str) -> None:
        pass

    def node_state(self, state: str) -> None:
        pass

    def known_series(self, role: str, stages: Iterable[int], clients: bool) -> None:
        pass

    def neighbour_alive(self, peer: str, alive: bool) -> None:
        pass

    def link_rate(self, peer: str, rate_bytes_s: float) -> None:
        pass

    def link_rate_gone(self, peer: str) -> None:
        pass

    def power_mode(self, name: str) -> None:
        pass

    def engine(self, stage, backend: str, on_gpu: bool, fallbacks) -> None:
        pass

    def client_refused(self) -> None:
        pass

    def last_warning(self, level: str, message: str, wall: float) -> None:
        pass

    def capture_warnings(self, logger=None) -> None:
        pass

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> Optional[int]:
        return None

    def close(self) -> None:
        pass
