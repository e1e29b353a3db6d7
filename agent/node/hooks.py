"""Deployment hooks of the node loop: systemd notification, metrics, saved state.

The node loop always holds a ``NodeHooks``; built with the defaults (no notify socket,
``NullMetrics``, no state directory) every call does nothing, which is what tests and the
testbed use. The loop calls:

- ``health(ok)`` once per loop iteration: sends the systemd watchdog ping at most every
  ``watchdog_interval_s`` (from the main loop, not a thread, so a stuck loop stops the pings);
- ``gauges(view, routing, thresholds)`` every heartbeat: queue lengths, mu, routing, thresholds;
  first, a worker's power-mode watch (``power``, ``agent.node.powerwatch``) takes its newest
  reading, so a mode switch reaches mu, the view and these gauges within a heartbeat;
- ``save_state(dict)`` each slot: the policy's state, atomically (``StateStore``); a failed
  save (full or read-only disk) is counted (``state_save_failed``, and in metrics) and logged
  at most once a minute, and the agent keeps serving.

``metrics`` is also handed to the node's sides and outbox for per-task counts. Capacity (mu) is
not a hook: ``capacity.Capacity`` owns it and writes it into the view.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional

from agent.ops.files import WriteFaults
from agent.ops.metrics import NullMetrics

log = logging.getLogger(__name__)


class NodeHooks:
    """Adapters the node loop calls; see the module docstring."""

    def __init__(self, notifier: Any = None, metrics: Any = None, state_store: Any = None,
                 watchdog_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.state_store = state_store
        self.watchdog_interval_s = watchdog_interval_s
        self.clock = clock
        self._last_ping = -1e18
        self._unhealthy_logged = False
        self.count: Callable[[str], None] = lambda name: None  # the node's counters (build sets it)
        self.power: Any = None  # a worker's PowerModeWatch (powerwatch.attach sets it)
        self.state_faults = WriteFaults("state " + str(getattr(state_store, "path", "")),
                                        clock=clock)

    def health(self, healthy: bool = True) -> None:
        """Feed the systemd watchdog (rate-limited) while ``healthy``; never once it is not."""
        if not healthy:  # no ping: systemd's watchdog restarts the agent after WatchdogSec
            if not self._unhealthy_logged:
                log.error("health check failed (inference thread gone); watchdog no longer fed")
                self._unhealthy_logged = True
            return
        now = self.clock()
        if self.notifier is not None and now - self._last_ping >= self.watchdog_interval_s:
            self._last_ping = now
            self.notifier.watchdog()

    def gauges(self, view: Any, routing: Dict[str, float], thresholds: Dict[int, float]) -> None:
        """Publish the heartbeat's gauges to metrics, after the power-mode watch's poll."""
        if self.power is not None:
            self.power.poll()
        m = self.metrics
        m.queue_length("input", view.input_queue)
        m.queue_length("output", view.output_queue)
        if view.capacity_flops:
            m.capacity(view.capacity_flops)
        for dst, p in routing.items():
            m.routing(dst, p)
        for stage, c in thresholds.items():
            m.threshold(stage, c)

    def save_state(self, state: Dict[str, Any], force: bool = False) -> None:
        """Save the policy's state (``force``: even if only its counts changed, at a stop); a
        failure is logged, never raised."""
        if self.state_store is None:
            return
        try:
            self.state_store.save(state, force)
        except (OSError, TypeError, ValueError) as exc:  # a full disk must not stop serving
            self.count("state_save_failed")
            self.metrics.write_failed("state")
            self.state_faults.failed(exc)
        else:
            self.state_faults.succeeded()

    def load_state(self) -> Optional[Dict[str, Any]]:
        """The saved policy state, or None (none saved, or unreadable: logged)."""
        if self.state_store is None:
            return None
        try:
            return self.state_store.load()
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("ignoring saved state: %s", exc)
            return None
