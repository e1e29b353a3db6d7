"""``edge-agent submit --rate R``: inputs sent on a Poisson schedule, answers taken as they come.

Sends go out at exponential gaps of mean 1/R seconds (Poisson arrivals, as the testbed's load
and the papers' models have them; ``--seed`` fixes the gaps) whatever is in flight, so the
delays are those of a fleet under load. Every input sent ends in the tally: answered
(completed, rejected, error) or, ``--timeout`` after its send with no answer, lost. The
connection is checked before the run (``submit``), never mid-run (that reconnects the
socket, and the answers of the inputs in flight would go to the old connection): an input
without an answer is lost and the run goes on, except that a first ``--timeout`` passing
before any answer at all came ends it (nothing is coming back). An input ZeroMQ cannot queue
(``NotSent``: a source gone mid-run takes none) is lost at once, reason "not sent": waiting
for room would stop the schedule and every deadline with it. A refusal of what every input
of the file shares (dtype, shape, size) stops the sending; the inputs in flight are still
awaited.
"""

from __future__ import annotations

import os
import random
import time
from collections import OrderedDict
from typing import Any, Dict, Optional


def send_at_rate(args: Any, client: Any, endpoint: str, x: Any, n: int, tally: Any,
                 fleet_limit: Optional[int] = None) -> None:
    """Send ``n`` inputs of ``x`` (one per row, as stored; the connection checked) at
    ``args.rate`` per second (see the module docstring), recording each answer in ``tally``.
    ``UsageError`` when the run cannot go on (said in one line; exit status 1 with the summary
    printed when answers came back). ``fleet_limit``: the source's ``max_message_bytes`` as its
    fleet.json records it (None: not known), weighed when no answer at all comes."""
    from agent.errors import UsageError
    from agent.fleet.client import NotSent
    from agent.fleet.client_wire import no_answer
    from agent.commands.submit_checks import file_refusal

    tally.header()
    rng = random.Random(args.seed)
    deadlines: Dict[str, float] = OrderedDict()  # in flight, in the order sent: id -> deadline
    stop = None  # the error that ended the sending
    sent = 0
    heard = False  # an answer came from the source
    due = time.monotonic() + rng.expovariate(args.rate)
    while (sent < n and stop is None) or deadlines:
        now = time.monotonic()
        while sent < n and stop is None and due <= now:
            tally.pending = "submit-%d-%d" % (os.getpid(), sent + 1)
            try:
                client.send(x[sent % len(x)][None, ...], tally.pending)
            except NotSent as exc:  # not in flight: a Ctrl-C now must not count it again
                tid, tally.pending = tally.pending, ""
                tally.sent(tid, sent, time.monotonic())
                tally.add(no_answer(tid, args.timeout, str(exc)))
            else:
                tally.sent(tally.pending, sent, client.sent_at[tally.pending])
                deadlines[tally.pending] = client.sent_at[tally.pending] + args.timeout
            tally.pending = ""
            sent += 1
            due += rng.expovariate(args.rate)
        for tid, deadline in list(deadlines.items()):  # the oldest first
            if deadline > now:
                break
            del deadlines[tid]
            client.sent_at.pop(tid, None)  # an answer after this is read past
            if not heard:  # nothing at all came back: nothing is coming
                tally.add(no_answer(tid, args.timeout))
                raise _nothing_back(args, client, endpoint, x, tid, deadlines, tally,
                                    n - sent, fleet_limit)
            tally.add(no_answer(tid, args.timeout))
        if not deadlines and (sent >= n or stop is not None):
            break
        wake = ([next(iter(deadlines.values()))] if deadlines else []) + (
            [due] if sent < n and stop is None else [])
        a = client.receive(max(0.0, min(wake) - time.monotonic()))
        if a is None:
            continue
        heard = True
        deadlines.pop(a.id, None)
        tally.add(a)
        line = file_refusal(args.images, x, a, 0) if stop is None else ""
        if line:  # every input would be refused alike: no more are sent
            stop = (line, n - sent)
    if stop is not None:
        line, left = stop
        err = UsageError(line + ("; %d input(s) not sent" % left if left else ""))
        if tally.answered > 1:
            tally.summary()
            err.exit_status = 1  # answers came back: a failed run
        raise err


def _nothing_back(args: Any, client: Any, endpoint: str, x: Any, tid: str,
                  deadlines: Dict[str, float], tally: Any, not_sent: int,
                  fleet_limit: Optional[int]) -> Exception:
    """The error ending a run in which no answer at all came within ``--timeout`` (``tid``: the
    first input so lost): the inputs still in flight are not awaited (recorded so), the
    connection is watched again and the likely cause said, as for one input at a time
    (``submit_checks.no_answer_cause``: a message ZeroMQ dropped for its size among them)."""
    from agent.errors import UsageError
    from agent.commands.submit_checks import no_answer_cause

    in_flight = list(deadlines)
    tally.abandon(in_flight, "no answer came for any input")
    for t in in_flight:
        client.sent_at.pop(t, None)
    deadlines.clear()
    problem = client.check_connection(min(args.timeout, 3.0))
    tally.summary()
    return UsageError("no answer from %s within %g s: %s; %d input(s) in flight not awaited, %d "
                      "not sent" % (endpoint, args.timeout,
                                    no_answer_cause(client, x, tid, problem, fleet_limit),
                                    len(in_flight), not_sent))
