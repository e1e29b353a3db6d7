"""What the node loop asks of its side (``SourceSide`` or ``WorkerSide``).

The loop owns the sockets, the timers and the custody of messages in flight; a side owns what
happens to tasks: a source creates them and waits for their results, a worker runs them. The
loop never looks at a side's attributes; it asks these questions and hands over these events.
Every default here is the answer of a side that has nothing of the kind.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from agent.protocol import wire


class Role:
    """Base of both sides; a side is handed an ``outbox.Outbox`` to send, time and count with."""

    def __init__(self, outbox: Any):
        self.out = outbox

    # -- life cycle --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The loop starts serving at monotonic time ``now``."""

    def stop_arrivals(self) -> None:
        """The loop is stopping: create no new tasks."""

    @property
    def drain_time_s(self) -> float:
        """How long a stopping loop waits for this side's work in flight."""
        return 0.0

    def in_flight(self) -> bool:
        """True while this side still holds work a stopping loop should wait for."""
        return False

    def healthy(self) -> bool:
        """False once this side can no longer serve (the systemd watchdog then starves)."""
        return True

    def finish(self, now: float, wall: float) -> None:
        """The loop has stopped: settle what is left."""

    # -- time --------------------------------------------------------------------------------

    def wake_at(self) -> Optional[float]:
        """Monotonic time this side next wants ``on_clock`` (None: no wish)."""
        return None

    def on_clock(self, now: float) -> None:
        """Called after each poll; do what has come due (task arrivals)."""

    def after_tick(self, now: float) -> None:
        """Called after each policy tick, once held tasks were offered to the policy again."""

    def on_timer(self, key: str, now: float) -> None:
        """A timer this side set with ``outbox.call_at`` is due."""

    def flush(self) -> None:
        """Periodic flush of what this side writes to disk."""

    def slot_rate(self, slot_length_s: float) -> Optional[float]:
        """A slot of ``slot_length_s`` ended: the arrival rate (tasks/s) the view carries from
        now on (None: leave it as it is); starts counting the next slot."""
        return None

    # -- input -------------------------------------------------------------------------------

    def wake_fds(self) -> List[int]:
        """File descriptors the loop polls for this side."""
        return []

    def on_fd(self, fd: int) -> None:
        """One of ``wake_fds`` is readable."""

    def on_data(self, identity: bytes, msg: wire.Message) -> None:
        """A data message (TASK or RESULT) arrived at this node's ROUTER."""
        self.out.reject("unexpected_kind", identity, "%s on the data socket" % msg.kind.name)

    def on_client(self, identity: bytes, msg: wire.Message) -> None:
        """A local client's message arrived."""
        self.out.reject("unexpected_kind", identity, "%s from a client" % msg.kind.name)

    def on_client_refused(self, identity: bytes, task_id: Optional[str], why: str = "") -> None:
        """A local client's message that the wire check refused (counted already); ``task_id``:
        its header's id, if it has one; ``why``: the check's message."""

    # -- status ------------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """This side's part of stats.json."""
        return {}
