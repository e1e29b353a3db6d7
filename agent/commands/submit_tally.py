"""The rows and the summary ``edge-agent submit`` prints: one line per answer, then the count
of each outcome, the accuracy over completed labelled inputs and the delay of completed
answers, and, after Ctrl-C or SIGTERM, the inputs in flight and not sent."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, List, Optional, Sequence

ORDER = ("completed", "rejected", "lost", "error")


class Tally:
    """Answers of one run, printed as they come; ``labels`` (or None) indexed by the input's
    position in the file."""

    def __init__(self, labels: Optional[Any], rows: int):
        self.labels = labels
        self.rows = rows  # inputs in the file (a --count past it cycles)
        self.fates: Counter = Counter()
        self.delays_s: List[float] = []
        self.labelled = 0  # completed inputs with a label (>= 0)
        self.correct = 0
        self.explained = set()  # the source's detail lines printed so far
        self.pending = ""  # the id of the input being sent or awaited ("" when none)
        self.last: Any = None  # the answer recorded last

    def header(self) -> None:
        """The table's column names."""
        print("%-22s %-9s %-22s %5s %10s %4s %9s%s" % (
            "id", "outcome", "reason", "class", "confidence", "exit", "delay ms",
            "  label" if self.labels is not None else ""))
        sys.stdout.flush()  # before the first input is sent: a reader sees the run began

    @property
    def answered(self) -> int:
        """Answers (or timeouts) recorded so far."""
        return sum(self.fates.values())

    def add(self, a: Any, i: int) -> None:
        """Record and print answer ``a`` to input ``i`` (its position in the run)."""
        self.fates[a.outcome] += 1
        self.last = a
        if a.id == self.pending:
            self.pending = ""
        label = ""
        if a.ok:
            self.delays_s.append(a.delay_s)
        if self.labels is not None:
            want = int(self.labels[i % self.rows])
            hit = a.ok and a.cls == want
            if a.ok and want >= 0:
                self.labelled += 1
                self.correct += int(hit)
            label = "  %d %s" % (want, "ok" if hit else "-")
        print("%-22s %-9s %-22s %5d %10.3f %4d %9.1f%s"
              % (a.id, a.outcome, a.reason or "-", a.cls, a.confidence, a.exit_stage,
                 a.delay_s * 1000.0, label))
        if a.detail and a.detail not in self.explained:  # each explanation once, below its row
            self.explained.add(a.detail)
            print("  %s: %s" % (a.id, a.detail))
        sys.stdout.flush()

    def summary(self) -> None:
        """The count of each outcome; then, when some completed, their delay (and accuracy)."""
        print("%d sent: %s" % (self.answered, ", ".join(
            "%d %s" % (self.fates[o], o) for o in ORDER if self.fates[o])))
        line = self.stats_line()
        if line:
            print(line)
        sys.stdout.flush()

    def stats_line(self) -> str:
        """"completed: accuracy A % (C of L labelled), delay mean M ms, p95 P ms" ("" when
        nothing completed)."""
        import numpy as np

        if not self.delays_s:
            return ""
        parts = []
        if self.labels is not None:
            parts.append("accuracy %s (%d of %d labelled)" % (
                "%.1f %%" % (100.0 * self.correct / self.labelled) if self.labelled else "-",
                self.correct, self.labelled))
        ms = np.asarray(self.delays_s) * 1000.0
        parts.append("delay mean %.1f ms, p95 %.1f ms" % (float(ms.mean()),
                                                          float(np.percentile(ms, 95))))
        return "completed: " + ", ".join(parts)


def interrupted_line(signal_name: str, in_flight: Sequence[str], not_sent: int) -> str:
    """The last line after Ctrl-C or SIGTERM: the inputs sent and not answered (ids) and how
    many were not sent."""
    ids = " (%s: sent, answer not awaited)" % " ".join(in_flight) if in_flight else ""
    return "interrupted (%s): %d input(s) in flight%s, %d not sent" % (
        signal_name, len(in_flight), ids, not_sent)
