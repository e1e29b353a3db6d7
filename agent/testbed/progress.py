"""The testbed's progress bar on stderr while its (policy, rate) runs go."""

from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on a text stream (stderr), redrawn in place with ``\\r``.

    On a stream that is not a terminal it prints one line per step instead, so logs stay
    readable.
    """

    def __init__(self, total: int, stream=None, width: int = 28, clock=time.monotonic):
        self.total = max(1, int(total))
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.clock = clock
        self.t0 = clock()
        self.done = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_label = None

    def update(self, done: float, label: str = "") -> None:
        """Show ``done`` of ``total`` steps (fractions allowed) with a short label."""
        self.done = min(float(done), float(self.total))
        frac = self.done / self.total
        fill = int(round(frac * self.width))
        line = "[%s%s] %3d%% %5.0fs %s" % ("#" * fill, "." * (self.width - fill),
                                           int(frac * 100), self.clock() - self.t0, label)
        if self._tty:
            self.stream.write("\r" + line[:110].ljust(110))
        elif label.split(":")[-1] != self._last_label:
            # not a terminal: one line per phase, not one per redraw
            self._last_label = label.split(":")[-1]
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
