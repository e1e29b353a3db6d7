"""Links seen from the sender: emulated pacing and measured rates.

``LinkPacer`` emulates a link of a given rate at the sender: a message occupies the link for its
wire bytes (``agent.policies.model.wire_bytes``: the tensor plus the measured header, framing
and TCP/IP overhead) over the rate, and transfers on one link are serialised (a message waits
for the one before it), so several senders' contention on a slow link is real.

``LinkRates`` estimates the rate of each of the sender's links from its own transfers: a
message's wire bytes over the time the link was busy with it, from the later of the moment the
link started carrying it and the previous ACK on that link, to its ACK (the same start-to-ACK
measurement as MDI-Exit's transfer delay D_nm; the ACK's way back is a small message). Sums of
bytes and of busy seconds decay by ``DECAY`` per sample, so the estimate follows a link that
slows down within a few dozen transfers; the configured rate is the prior, used until
``MIN_SAMPLES`` transfers were seen.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

from agent.policies.model import wire_bytes

MIN_SAMPLES = 8  # transfers on a link before its estimate replaces the configured rate
DECAY = 0.9  # weight of the past per new sample (about the last ten transfers count)


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
        self._bytes: Dict[str, float] = {}
        self._busy_s: Dict[str, float] = {}
        self._samples: Dict[str, int] = {}
        self._last_ack: Dict[str, float] = {}

    def observe(self, peer: str, start: float, ack: float, nbytes: float) -> None:
        """One transfer to ``peer``: link start and ACK (monotonic seconds), its wire bytes."""
        busy = max(0.0, ack - max(start, self._last_ack.get(peer, 0.0)))
        self._last_ack[peer] = max(ack, self._last_ack.get(peer, 0.0))
        self._bytes[peer] = DECAY * self._bytes.get(peer, 0.0) + nbytes
        self._busy_s[peer] = DECAY * self._busy_s.get(peer, 0.0) + busy
        self._samples[peer] = self._samples.get(peer, 0) + 1

    def estimate(self, peer: str) -> Optional[float]:
        """The measured rate (bytes/s), or None before ``MIN_SAMPLES`` transfers."""
        if self._samples.get(peer, 0) < MIN_SAMPLES or self._busy_s.get(peer, 0.0) <= 0:
            return None
        return self._bytes[peer] / self._busy_s[peer]

    def rate(self, peer: str) -> float:
        """The rate to plan with: the estimate once there is one, else the configured prior."""
        got = self.estimate(peer)
        return self.prior.get(peer, 0.0) if got is None else got

    def table(self) -> Dict[str, float]:
        """{peer: measured bytes/s} of the links with an estimate."""
        out = {}
        for p in self._samples:
            got = self.estimate(p)
            if got is not None:
                out[p] = got
        return out
