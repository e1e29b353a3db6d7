"""Links seen from the sender: emulated pacing and measured rates.

``LinkPacer`` emulates a link of a given rate at the sender: a message occupies the link for its
wire bytes (``agent.policies.model.wire_bytes``: the tensor plus the measured header, framing
and TCP/IP overhead) over the rate, and transfers on one link are serialised (a message waits
for the one before it), so several senders' contention on a slow link is real.

``LinkRates`` estimates the rate of each of the sender's links from its own transfers, timed
from the moment the link starts carrying a message to its ACK (the same start-to-ACK
measurement as MDI-Exit's transfer delay D_nm). A message sent while the one before it was
still unacknowledged waited for the link, which was then busy from the previous ACK to this
one: its wire bytes over that interval measure the rate without the ACK's way back or the
receiver's poll delay (both cancel between consecutive ACKs). A message that found the link
idle includes them, so its bytes over its start-to-ACK time only bound the rate from below.
A receiver acknowledges what it has read in one ACK message: messages acknowledged together
with the one before them (the same ACK time) add their bytes to that one's sample (its
interval covered them), not a zero-length queued interval. ACKs that reach the sender in
bunches (a receiver that polls, a busy sender loop) move time between consecutive intervals
but not out of their sum, so a slow link reads its rate within a few percent (unit tests on
such patterns).
On a link whose messages take less than the ACKs' latency (a 1.6 MB/s link carries an image
in 2.2 ms; a receiver's loop on a loaded machine answers in 1-60 ms) "queued behind the
previous one" only means the ACK was late: the intervals are the gaps between sends, and
the estimate read the offered load, 54-660 KB/s for 1.6 MB/s links (which sent a policy's
traffic onto the really slow links). No transfer beats its link, so the largest bytes over
start-to-ACK of the transfers ACKed in the last ``RECENT_S`` is a lower bound on the rate;
queued intervals that make the link ``CONSISTENT`` times slower than such a transfer went
are ACK spacing, not the link, and are not used (the configured rate stands). A slow link
passes: under kernel shaping an idle message there arrives after its bytes but the last
packet's (``agent.testbed.shaping``), about 1.2x its rate, while the queued intervals read
0.9-1.0x. (With segmentation offload on the veths a whole message passed an idle HTB class
at once, and this estimator read a 41.7 KB/s link 3-6x too fast.)
Sums of bytes and of seconds decay by ``DECAY`` per interval (an ACK message's). The
configured rate is the prior: after ``MIN_SAMPLES`` queued transfers their estimate replaces
it; with only idle transfers, the lower bound replaces it where it is higher (a link faster
than configured). A link slower than
configured that carries enough to matter queues its messages, so it is seen within a few
dozen transfers.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Deque, Dict, Mapping, Optional, Tuple

from agent.policies.model import wire_bytes

MIN_SAMPLES = 8  # transfers on a link before its estimate replaces the configured rate
RECENT_S = 2.0  # transfers ACKed this recently bound the rate from below (fastest_recent)
CONSISTENT = 1.5  # queued intervals slower than a recent transfer by more: ACK spacing
DECAY = 0.9  # weight of the past per new interval (about the last ten ACKs count)


def message_wire_bytes(tensor_bytes: int) -> float:
    """Bytes a data message with ``tensor_bytes`` of tensor takes on a link (one definition,
    the model's)."""
    return float(wire_bytes(tensor_bytes))


class LinkPacer:
    """Sender-side emulation of one link: ``schedule`` says when a message may leave."""

    def __init__(self, rate_bytes_s: float):
        if not rate_bytes_s > 0:
            raise ValueError("link rate must be > 0 bytes/s, got %r" % (rate_bytes_s,))
        self.rate_bytes_s = float(rate_bytes_s)
        self._free_at = 0.0  # monotonic time the link finishes its last scheduled transfer

    def schedule(self, now: float, nbytes: float) -> float:
        """Reserve the link for ``nbytes`` (wire bytes); return the monotonic time the message
        is delivered (the time to hand it to the socket)."""
        start = max(now, self._free_at)
        self._free_at = start + nbytes / self.rate_bytes_s
        return self._free_at


class LinkRates:
    """Measured rate of each link of one sender (module docstring); not thread-safe."""

    def __init__(self, prior: Mapping[str, float]):
        self.prior = {p: float(r) for p, r in prior.items()}  # configured r, bytes/s (0: none)
        # per peer, one list (one look-up per ACKed result, which a worker pays on every task):
        # [queued bytes, queued busy s, queued samples, idle bytes, idle s, idle n,
        #  the last ACK time (None: none yet), the previous sample's bucket (0 queued, 3 idle),
        #  the recent transfers: a deque of (ACK time, bytes/start-to-ACK)]
        self._sums: Dict[str, list] = {}

    def observe(self, peer: str, start: float, ack: float, nbytes: float) -> None:
        """One transfer to ``peer``: link start and ACK (monotonic seconds), its wire bytes."""
        s = self._sums.get(peer)
        if s is None:  # made once, not as a setdefault argument on every call
            s = self._sums[peer] = [0.0, 0.0, 0, 0.0, 0.0, 0, None, 0, deque()]
        last = s[6]
        # a sliding-window maximum: values fall from left to right (an entry below a newer one
        # can never be the maximum again), so the left end is the fastest and each sample costs
        # O(1) however many transfers the window holds
        recent: Deque[Tuple[float, float]] = s[8]
        if ack > start:
            rate = nbytes / (ack - start)
            while recent and recent[-1][1] <= rate:
                recent.pop()
            recent.append((ack, rate))
        oldest = ack - RECENT_S
        while recent and recent[0][0] < oldest:
            recent.popleft()
        if last is not None and start < last == ack:
            # acknowledged together with the message before it (one ACK message for both: the
            # sender observes its transfers at one ACK time): that one's interval already
            # covers this transfer, so its bytes join that sample, undecayed (a decay per
            # joined transfer shrank the one interval while the bytes kept adding: 32 keys an
            # ACK read 8x the rate, 6,700 overflowed). Separate ACK messages, even microseconds
            # apart, each add their own interval (a chain of them joined added bytes without
            # time, and the estimate grew without bound).
            i = s[7]
            s[i] += nbytes
            s[i + 2] += 1
            return
        if last is not None and start < last:  # queued behind the previous message
            i, seconds = 0, max(0.0, ack - last)
        else:  # found the link idle: start-to-ACK includes the ACK's way back
            i, seconds = 3, max(0.0, ack - start)
        s[7] = i
        s[i] = DECAY * s[i] + nbytes
        s[i + 1] = DECAY * s[i + 1] + seconds
        s[i + 2] += 1
        s[6] = ack if last is None else max(ack, last)

    def estimate(self, peer: str) -> Optional[float]:
        """The measured rate (bytes/s), or None while the prior stands (module docstring)."""
        s = self._sums.get(peer)
        if s is None:
            return None
        low = s[3] / s[4] if s[5] >= MIN_SAMPLES and s[4] > 0 else 0.0
        queued = s[0] / s[1] if s[2] >= MIN_SAMPLES and s[1] > 0 else 0.0
        if queued > 0 and CONSISTENT * queued >= self.fastest_recent(peer):
            return max(queued, low)
        if low > self.prior.get(peer, 0.0):
            return low
        return None

    def fastest_recent(self, peer: str) -> float:
        """The largest bytes over start-to-ACK of the transfers ACKed in the last ``RECENT_S``
        (bytes/s): no message beats its link, so the rate is at least this."""
        s = self._sums.get(peer)
        return s[8][0][1] if s is not None and s[8] else 0.0

    def seed(self, measured: Mapping[str, float]) -> Dict[str, float]:
        """Make rates this sender measured before a restart the priors of its links (the
        configured rate stays the prior of a link without one); the seeded {peer: bytes/s}."""
        out = {}
        for peer, r in measured.items():
            if peer in self.prior and isinstance(r, (int, float)) and not isinstance(r, bool) \
                    and math.isfinite(r) and r > 0:
                self.prior[peer] = out[peer] = float(r)
        return out

    def rate(self, peer: str) -> float:
        """The rate to plan with: the estimate once there is one, else the configured prior."""
        got = self.estimate(peer)
        return self.prior.get(peer, 0.0) if got is None else got

    def table(self) -> Dict[str, float]:
        """{peer: measured bytes/s} of the links with an estimate."""
        out = {}
        for p in self._sums:
            got = self.estimate(p)
            if got is not None:
                out[p] = got
        return out
