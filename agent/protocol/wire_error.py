"""The error a frame sequence that is no valid message raises (``agent.protocol.wire``).

Its text goes into a log line and, for a client's refused task, back to the client as the
answer's ``detail``; it quotes what came (a version, a kind, a dtype, a node id), and a header
may hold up to 64 KiB of one string (a ``repr`` of control characters four times that). So the
detail is cut and cleaned here, once for every caller: quoted whole, one such header made a
60 KB log line, and a client's answer above the 64 KiB header bound that its own decoder
refused, so the client never learnt why its task failed.
"""

from __future__ import annotations

from agent.protocol.text import printable


class WireError(ValueError):
    """A frame sequence that is not a valid message; ``reason`` names the drop counter. The
    detail is one printable line of at most ``text.DETAIL_MAX_CHARS`` characters."""

    def __init__(self, reason: str, detail: str = ""):
        detail = printable(detail)
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason
