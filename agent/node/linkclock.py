"""Links seen from a sender's outbox: when a link nothing paces will have carried what was handed
to it (its ACK deadline counts from then), how far behind each successor's link is, and where
a measured rate goes.

On a link the sender does not pace (``emulate_links`` off: a kernel-shaped or real network) a
message handed to the socket leaves at once, but the ACK cannot come before the link has carried
it and everything handed to it before. A 6.4 MB tensor on a 5 MB/s link takes 1.34 s: an ACK
deadline of ``ack_timeout_s`` (1 s) from the send re-sent every such task while its first copy
was still on the wire (twice the link's load, the next stage ran it twice, and no first send's
ACK ever timed the link). ``LinkClock`` keeps, per peer, when the link is expected to be free,
as ``agent.net.links.LinkPacer`` does but without delaying anything: a message of ``b`` wire
bytes ends at ``max(now, free_at) + b / r``, and its ACK deadline is that plus
``ack_timeout_s``. ``r`` is the rate the policy's view plans with (the configured
``link_rate_bytes_s``, replaced by the measured estimate once there is one); with none known
(0) the deadline is ``ack_timeout_s`` from the send.

An ACK says the link has carried its message, so those handed to the link after it need at
most their own expected time from then: ``free_at`` moves back to the ACK time plus what was
expected behind the message, never later (a link faster than its rate would otherwise push
the deadlines, and the time to notice a dead peer, further out with every message). A dropped
connection takes what was queued on it: its peer's clock starts again.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Sequence

from agent.net.links import LinkRates
from agent.node.outitem import OutItem, wire_bytes_of
from agent.protocol.wire import Kind


class LinkClock:
    """Per peer, the monotonic time its link is expected to have carried what was sent on it
    (module docstring); not thread-safe."""

    def __init__(self) -> None:
        self._free_at: Dict[str, float] = {}

    def reserve(self, peer: str, now: float, wire_bytes: float, rate_bytes_s: float) -> float:
        """A message of ``wire_bytes`` handed to ``peer``'s link at ``now``: the monotonic time
        the link is expected to have carried it (``now`` when ``rate_bytes_s`` is unknown)."""
        if not rate_bytes_s > 0:
            return now
        end = max(now, self._free_at.get(peer, 0.0)) + wire_bytes / rate_bytes_s
        self._free_at[peer] = end
        return end

    def carried(self, peer: str, expected_end: float, now: float) -> None:
        """``peer`` ACKed at ``now`` a message expected to have crossed by ``expected_end``
        (0: none was reserved): what follows it on the link is expected done no later than that
        much after ``now``."""
        free = self._free_at.get(peer)
        if free is not None and expected_end > 0:
            self._free_at[peer] = min(free, now + max(0.0, free - expected_end))

    def reset(self, peer: str) -> None:
        """``peer``'s connection dropped, and with it what was queued on it."""
        self._free_at.pop(peer, None)


def links_behind(items: Iterable[OutItem], rate_maps: Sequence[Mapping[str, float]],
                 max_s: float) -> Dict[str, float]:
    """{successor: seconds beyond its bound} of each successor whose tasks sent and not ACKed
    (``items``) take more link time, at the lowest positive rate that ``rate_maps`` (each peer
    -> bytes/s) give it, than the larger of ``max_s`` and the largest of those tasks alone;
    one without a rate is never behind. So one task in flight never makes a link full by
    itself: on a link where a task takes longer than ``max_s`` (the demo image, 1.78 s at
    2,000 B/s) a task arriving while another was unacknowledged otherwise found the link full
    (a source rejected it: ``overload``) though the link would carry it next."""
    queued: Dict[str, float] = {}
    largest: Dict[str, float] = {}
    for i in items:
        if i.kind == Kind.TASK and i.link_start > 0:
            nbytes = wire_bytes_of(i.nbytes)
            queued[i.dest] = queued.get(i.dest, 0.0) + nbytes
            largest[i.dest] = max(largest.get(i.dest, 0.0), nbytes)
    out: Dict[str, float] = {}
    for peer, nbytes in queued.items():
        rates = [r for r in (m.get(peer, 0.0) for m in rate_maps) if r > 0]
        # bytes, not seconds, compared: one task alone is never beyond itself by rounding
        if rates and nbytes > max(min(rates) * max_s, largest[peer]):
            out[peer] = nbytes / min(rates) - max(max_s, largest[peer] / min(rates))
    return out


def rate_measured(rates: LinkRates, peer: str, view: Any, counters: Any, metrics: Any) -> None:
    """``peer``'s link has new rate samples (``rates``): while it has an estimate the policy's
    ``view`` (DTO-EE, BF, the ACK deadlines), ``counters`` (``link_rate_bytes_s_<peer>``, in
    stats) and ``metrics`` use it; when its samples stop supporting one, the configured rate is
    back."""
    got = rates.estimate(peer)
    view.link_rate_bytes_s[peer] = rates.rate(peer)
    if got is not None:
        counters["link_rate_bytes_s_" + peer] = int(got)
        metrics.link_rate(peer, got)
    else:
        counters.pop("link_rate_bytes_s_" + peer, None)
        metrics.link_rate_gone(peer)
