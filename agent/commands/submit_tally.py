"""The rows and the summary ``edge-agent submit`` prints: one line per answer, then the count
of each outcome, the accuracy over completed labelled inputs and the delay of completed
answers, and, after Ctrl-C or SIGTERM, the inputs in flight and not sent."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
        # inputs sent and not answered yet: id -> (position in the run, send time on the
        # monotonic and the wall clock), so each answer finds its label and record
        self.sent_inputs: Dict[str, Tuple[int, float, float]] = {}
        self.out: Any = None  # a submit_records.RecordsOut (--out), or None
        self.source = ""  # the source's id written in each record

    def sent(self, tid: str, i: int, sent_mono: float) -> None:
        """Note input ``i`` sent as ``tid`` at ``sent_mono`` (the client's ``sent_at``)."""
        self.sent_inputs[tid] = (i, sent_mono, time.time() - (time.monotonic() - sent_mono))

    def _label(self, i: int) -> Optional[int]:
        return None if self.labels is None else int(self.labels[i % self.rows])

    def abandon(self, ids: Sequence[str], why: str) -> None:
        """Record the inputs ``ids`` sent whose answers are not awaited (the run ends): in the
        records only (status lost, reason "not awaited: ``why``"), not in the counts printed."""
        from agent.fleet.client_wire import Answer

        for tid in ids:
            i, mono, wall = self.sent_inputs.pop(tid, (0, 0.0, 0.0))
            if self.out is not None and mono:
                from agent.commands.submit_records import record

                a = Answer(tid, "lost", "not awaited: " + why, -1, 0.0, 0, 0.0)
                self.out.write(record(a, mono, wall, self.source, self._label(i)))

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

    def add(self, a: Any, i: Optional[int] = None) -> None:
        """Record and print answer ``a`` to input ``i`` (its position in the run; by default
        the one ``sent`` noted for its id)."""
        at = self.sent_inputs.pop(a.id, None)
        if i is None:
            i = at[0] if at else 0
        if self.out is not None and at is not None:
            from agent.commands.submit_records import record

            self.out.write(record(a, at[1], at[2], self.source, self._label(i)))
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
    """The last line after Ctrl-C or SIGTERM: the inputs sent and not answered (ids, in the
    order sent, a run of consecutive ones as ``submit-P-4..9``) and how many were not sent."""
    ids = " (%s: sent, answer not awaited)" % " ".join(id_runs(in_flight)) if in_flight else ""
    return "interrupted (%s): %d input(s) in flight%s, %d not sent" % (
        signal_name, len(in_flight), ids, not_sent)


def id_runs(ids: Sequence[str]) -> List[str]:
    """Task ids ``PREFIX-N`` in the order of N (not as text: 10 after 9), each run of
    consecutive N as ``PREFIX-FIRST..LAST``: a fast run has thousands in flight."""
    def key(tid: str) -> Tuple[str, int]:
        prefix, _, n = tid.rpartition("-")
        return (prefix, int(n)) if n.isdigit() else (tid, -1)

    out: List[str] = []
    run: List[Tuple[str, int]] = []  # (prefix, N) of the run being gathered
    for prefix, n in sorted(key(t) for t in ids) + [("", -2)]:  # a sentinel ends the last run
        if run and n >= 0 and prefix == run[0][0] and n == run[-1][1] + 1:
            run.append((prefix, n))
            continue
        if run:
            first, last = run[0], run[-1]
            out.append(first[0] if first[1] < 0 else "%s-%d" % first if len(run) == 1
                       else "%s-%d..%d" % (first[0], first[1], last[1]))
        run = [(prefix, n)]
    return out
