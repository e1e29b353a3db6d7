"""What a stopping node still waits for in its outbox, and what it gives up.

After SIGTERM the loop serves on until its side's work is done and its custody has ended, or
the side's ``drain_time_s`` is over (``loop.Node.run``). Custody only ends with an ACK of the
hop it went to, so waiting is worth it only while that can still come: a result for a source
that has stopped (the testbed stops the sources first, then the workers) would keep the stop
waiting for the whole bound and be given up all the same; so would a task whose source was
heard and is gone (nobody takes its answer). A task sent to a successor that has gone since is
still waited for while another successor of its stage is alive: at its ACK deadline
(``ack_timeout_s``) the outbox sends it there (a successor found gone by its silence keeps its
tasks until then; only a dropped connection re-routes at once). A task held for want
of a successor (``Outbox.waiting``) is waited for while a successor of its stage is alive,
refusing or not: its hold ends within a second (``outbox.HOLD_MAX_S``).
"""

from __future__ import annotations

from typing import Any, Tuple

from agent.protocol.wire import Kind


def heard_and_gone(view: Any, node: Any) -> bool:
    """True when ``node`` (a task's source) was heard and is gone now (``view``, a NodeView):
    nobody takes its task's answer."""
    return node in view.peer_state and node not in view.alive


def custody_left(out: Any) -> Tuple[int, int]:
    """(items of ``out``, an ``outbox.Outbox``, a stopping node waits for, items it gives up):
    sent and not ACKed, or held for a successor; waited for while where they go, and the
    source of a task, are alive."""
    view = out.view

    def source_gone(item: Any) -> bool:
        return item.kind == Kind.TASK and heard_and_gone(view, item.fields.get("source"))

    def reaches(item: Any) -> bool:  # where it went, or for a task another of its stage
        return item.dest in view.alive or (item.kind == Kind.TASK and bool(
            view.alive_successors(item.fields["stage"], usable=False)))

    live = sum(1 for i in out.items.values() if reaches(i) and not source_gone(i))
    gone = len(out.items) - live
    for item in out.waiting:
        if view.alive_successors(item.fields["stage"], usable=False) and not source_gone(item):
            live += 1
        else:
            gone += 1
    return live, gone
