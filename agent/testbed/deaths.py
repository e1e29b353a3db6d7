"""An agent of a local testbed run, or its network, that ended while the run still needed it.

The testbed stops its agents itself; one that ends otherwise (killed from outside, the
out-of-memory killer, an error of its own, a stop nobody asked the testbed for) spoils the rate
it was serving: the rate is cut short and summarised from its sources' records, and the
command ends with exit status 1 (``agent.commands.testbed``). What the user is told: one line
naming the agent, its role and how it ended (exit status, or the signal that killed it), the
last error line of its log when it has one, and the log's last lines under it. A netns network
no longer the one planned (a delay shim that died drops its links' packets) spoils the run the
same way (``NetworkBroke``): one line saying what broke.
"""

from __future__ import annotations

import os
import signal
from typing import List, Optional, Sequence

TAIL_LINES = 6  # log lines shown under the line naming a dead agent


def read_log_tail(path: str, lines: int, max_bytes: int = 4000) -> List[str]:
    """The last ``lines`` lines of a log file (within its last ``max_bytes``); none when it
    cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.strip("\n").splitlines()[-lines:]


def error_line(lines: Sequence[str]) -> Optional[str]:
    """The last error line among a log's ``lines``: an ERROR/CRITICAL record, a command's
    ``error:`` line or an exception's last line; None when there is none."""
    for line in reversed([l.strip() for l in lines if l.strip()]):
        words = line.split()
        if ("ERROR" in words[:4] or "CRITICAL" in words[:4] or ": error: " in line
                or (words[0].rstrip(":").endswith(("Error", "Exception"))
                    and not line.startswith(" "))):
            return line
    return None


def how_it_ended(status: int) -> str:
    """An exit status as a person reads it: a negative one (Python's for a signal) names the
    signal, as a shell's 128+N would."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "signal %d" % -status
        return "killed by %s (exit status %d)" % (name, 128 - status)
    return "exited with status %d" % status


class RunSpoiled(RuntimeError):
    """A part the run needed ended while it ran: the rate is cut short and the command ends
    with one line (``line``), the lines under it (``tail_lines``) and exit status 1."""

    def line(self) -> str:
        """One line saying what ended and how."""
        return str(self)

    def tail_lines(self) -> List[str]:
        """Lines shown under ``line`` (none by default)."""
        return []


class NetworkBroke(RunSpoiled):
    """The netns network is no longer the one planned (``Network.problem``: a delay shim
    exited, so its links drop every packet)."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__("network: %s" % problem)


class AgentDied(RunSpoiled):
    """An agent the run needed ended on its own or was ended from outside the testbed."""

    def __init__(self, node_id: str, role: str, status: int, log_path: str,
                 when: str = "during the run"):
        self.node_id = node_id
        self.role = role
        self.status = status
        self.log_path = log_path
        self.tail = read_log_tail(log_path, TAIL_LINES)
        self.error = error_line(read_log_tail(log_path, 60, 16000))
        self.when = when
        super().__init__(self.line())

    def line(self) -> str:
        """One line: which agent, its role, how it ended, its last error line if any."""
        return "agent %s (%s) %s %s%s (log %s)" % (
            self.node_id, self.role, how_it_ended(self.status), self.when,
            ": %s" % self.error if self.error else "", self.log_path)

    def tail_lines(self) -> List[str]:
        """The log's last lines, indented, with a heading (none for an empty log)."""
        if not self.tail:
            return ["  (its log %s is empty)" % self.log_path]
        return ["  last lines of its log:"] + ["    " + l for l in self.tail]


def cut_short_lines(cut: Sequence, results: str, done: int, total: int) -> List[str]:
    """Under a dead agent's line: each (policy, rate) it cut short, with every task counted
    (its partial result, ``cut``), and how many runs finished; ``results``: results.json."""
    lines = []
    for r in cut:
        more = "".join(", %d %s" % (n, what) for n, what in ((r.rejected, "rejected"),
                                                            (r.error, "error")) if n)
        lines.append("  cut short: %s at %g tasks/s: %d created, %d completed, %d lost%s "
                     "(under \"partial\" in %s)" % (r.policy, r.rate, r.created, r.completed,
                                                    r.lost, more, results))
    lines.append("  %d of %d runs finished%s" % (done, total, ", kept in %s" % results
                                                 if cut or done else ""))
    return lines
