"""How a node's sockets end at a stop: what the loop last sent still reaches its peers, within a
bound.

Two things lost the last messages of every stop. ZeroMQ writes on its I/O thread, so a message
``send`` accepted may still sit in the socket's queue when the loop ends, and LINGER 0 drops it.
And a peer's DEALER (IMMEDIATE: a send to a gone peer fails at once) throws away what it has
received but its loop has not read yet as soon as the connection drops. So the last ACKs a source
sent for results it had received and recorded were lost (the workers re-sent those results and
counted them ``drop_undeliverable``), and so were a stopping worker's last ACKs of tasks (their
senders re-sent them elsewhere although this worker had taken them).

So ``Transport.close`` first waits until ``STOP_SETTLE_S`` have passed since the last reply on
the data socket (``settle``: a peer's loop reads an ACK within milliseconds unless a long pass
holds it), and closes the data sockets (the ROUTER: ACKs; the client ROUTER: answers; the
DEALERs: tasks and results) with LINGER ``STOP_LINGER_MS``: the context's ``term``
(``agent.node.build.serve``) waits until what they hold is written to the kernel, or that bound
is over. The stop stays fast and bounded whatever the peers do: a peer that is gone holds nothing
(IMMEDIATE refuses a send to it, the ROUTER's MANDATORY a reply), one that is stopped or reads
nothing costs the bounds once (the sockets' lingers run at the same time on the I/O thread),
at most ``STOP_SETTLE_S`` + ``STOP_LINGER_MS`` in all, far inside systemd's stop timeout. The
control PUB (its messages repeat every round), the SUBs and the monitors close at once.
"""

from __future__ import annotations

import time
from typing import Collection, Iterable

import zmq

# the most a stop waits for queued data messages to leave: writing a few ACKs or results to the
# kernel takes microseconds; a peer that reads nothing must not hold the stop longer than this
STOP_LINGER_MS = 50
# the most a stop waits after its last reply before it drops the connections: the peers' loops
# read the ACKs meanwhile (what a DEALER has not read when its connection drops is lost)
STOP_SETTLE_S = 0.1


def settle(replied_at: float) -> None:
    """Wait until ``STOP_SETTLE_S`` have passed since ``replied_at`` (monotonic seconds: the last
    reply on the data socket); at once when that was longer ago."""
    left_s = replied_at + STOP_SETTLE_S - time.monotonic()
    if left_s > 0:
        time.sleep(left_s)


def close_sockets(sockets: Iterable[zmq.Socket], flushed: Collection[zmq.Socket],
                  linger_ms: int) -> None:
    """Close ``sockets``: those in ``flushed`` with LINGER ``linger_ms`` (their queued messages
    still go out until the context's ``term``, at most that long), the rest at once."""
    for s in sockets:
        try:
            s.close(linger=linger_ms if s in flushed else 0)
        except zmq.ZMQError:
            pass
