"""Emulated links: the sender paces its own messages at the link's rate.

``LinkPacer`` emulates a link of a given rate at the sender: a message of B bytes occupies the
link for B / rate seconds, transfers on one link are serialised (a message waits for the one
before it), so several senders' contention on a slow link is real.
"""

from __future__ import annotations


class LinkPacer:
    """Sender-side emulation of one link: ``schedule`` says when a message may leave."""

    def __init__(self, rate_bytes_s: float):
        if not rate_bytes_s > 0:
            raise ValueError("link rate must be > 0 bytes/s, got %r" % (rate_bytes_s,))
        self.rate_bytes_s = float(rate_bytes_s)
        self._free_at = 0.0  # monotonic time the link finishes its last scheduled transfer

    def schedule(self, now: float, nbytes: int) -> float:
        """Reserve the link for ``nbytes``; return the monotonic time the message is delivered
        (the time to hand it to the socket)."""
        start = max(now, self._free_at)
        self._free_at = start + nbytes / self.rate_bytes_s
        return self._free_at
