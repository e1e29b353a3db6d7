"""Deployment hooks of the node loop: systemd notification, metrics, saved state, online mu.

The node loop calls these at fixed points; with the defaults (no notify socket, ``NullMetrics``,
no state directory, no estimator) every call does nothing, so the loop never depends on them:

- ``health()`` once per loop iteration: sends the systemd watchdog ping at most every
  ``watchdog_interval_s`` (from the main loop, not a thread, so a stuck loop stops the pings);
- ``on_service(done)`` after each inference: feeds the online capacity estimator and metrics;
- ``refresh(view)`` before a policy reads the view: current mu and service time, queue gauges;
- ``gauges(view, routing, thresholds)`` every heartbeat: queue lengths, mu, routing, thresholds;
- ``save_state(dict)`` each slot: the policy's state, atomically (``StateStore``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional

from agent.ops.metrics import NullMetrics

log = logging.getLogger(__name__)


class NodeHooks:
    """Adapters the node loop calls; see the module docstring."""

    def __init__(self, notifier: Any = None, metrics: Any = None, state_store: Any = None,
                 estimator: Any = None, capacity_flops: float = 0.0, service_time_s: float = 0.0,
                 watchdog_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.state_store = state_store
        self.estimator = estimator
        self.capacity_flops = capacity_flops  # start-up mu (profile, timed or emulated)
        self.service_time_s = service_time_s
        self.watchdog_interval_s = watchdog_interval_s
        self.clock = clock
        self._last_ping = -1e18
        self._last_drift = False
        self._unhealthy_logged = False

    def health(self, healthy: bool = True) -> None:
        if not healthy:  # no ping: systemd's watchdog restarts the agent after WatchdogSec
            if not self._unhealthy_logged:
                log.error("health check failed (inference thread gone); watchdog no longer fed")
                self._unhealthy_logged = True
            return
        now = self.clock()
        if self.notifier is not None and now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self.notifier.watchdog()

    def on_service(self, done: Any) -> None:
        self.metrics.service_time(done.service_time_s)
        if self.estimator is None:
            return
        self.estimator.observe(done.service_time_s)
        drifted = self.estimator.drifted()
        if drifted and not self._last_drift:
            log.warning("capacity drifted: start-up %.3g FLOP/s, now %.3g FLOP/s",
                        self.capacity_flops, self.estimator.capacity_flops or 0.0)
        self._last_drift = drifted

    def refresh(self, view: Any) -> None:
        if self.estimator is not None and self.estimator.capacity_flops:
            view.capacity_flops = float(self.estimator.capacity_flops)
            view.service_time_s = float(self.estimator.service_time_s or self.service_time_s)
        else:
            view.capacity_flops = self.capacity_flops
            view.service_time_s = self.service_time_s

    def gauges(self, view: Any, routing: Dict[str, float], thresholds: Dict[int, float]) -> None:
        m = self.metrics
        m.queue_length("input", view.input_queue)
        m.queue_length("output", view.output_queue)
        if view.capacity_flops:
            m.capacity(view.capacity_flops)
        for dst, p in routing.items():
            m.routing(dst, p)
        for stage, c in thresholds.items():
            m.threshold(stage, c)

    def save_state(self, state: Dict[str, Any]) -> None:
        if self.state_store is None:
            return
        try:
            self.state_store.save(state)
        except (OSError, TypeError, ValueError) as exc:  # a full disk must not stop serving
            log.warning("cannot save state: %s", exc)

    def load_state(self) -> Optional[Dict[str, Any]]:
        if self.state_store is None:
            return None
        try:
            return self.state_store.load()
        except (OSError, ValueError) as exc:
            log.warning("ignoring saved state: %s", exc)
            return None
