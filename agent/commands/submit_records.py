"""``edge-agent submit --out DIR``: one record per input, in the records format a source writes,
and ``edge-agent report``'s reading of such a run.

``submit --out DIR`` makes a run folder ``DIR/YYYYmmdd-HHMMSS`` (``DIR/latest`` points to it,
as ``testbed --out`` does) once its connection check has passed (a refused connection leaves
no empty run for ``report``), holding ``submit.json`` (how the run was asked for: endpoint,
images, rate, seed, count, timeout; rewritten at the end with what happened) and
``records.jsonl``: one task record per input sent, appended as its answer comes (or its
``--timeout`` passes), each line written whole with one ``write`` on a file opened for
appending, so a killed run leaves at most a torn last line, which ``report`` passes over. A
record holds what the client knows: ``id``, ``source``, ``status`` (the answer's outcome),
``reason``, ``created_mono`` (the send, on this machine's monotonic clock), ``created_wall``,
``finished_mono`` and ``delay_s`` (when an answer came), ``exit_stage``, ``cls`` and
``confidence`` (completed), ``label`` and ``correct`` (when the file has a label), ``detail``
(a refused input). The run folder is locked (``RUN/.lock``) while submit writes it, so
``report`` says ``[in progress]``.

A submit run has no topology, no bundle and no warm-up: ``load_submit_run`` summarises its
records with the testbed's own summariser as one row, its policy the fleet's (``fleet.policy``
of a ``--fleet`` folder's ``testbed.json``) or ``submit`` when not known, and its rate the
``--rate`` asked for (0: one input at a time); the accuracy is over the completed inputs with
a label, as submit's own summary line gives it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from agent.errors import UsageError
from agent.ops.state import RECORDS_FILE  # a submit run's records: named as a source's are

INFO = "submit.json"  # how a submit run was asked for, in its run folder
UNKNOWN_POLICY = "submit"  # the policy column of a run whose fleet's policy is not known


def fleet_policy(fleet: Optional[str]) -> str:
    """``fleet.policy`` of a `fleet render` folder's ``testbed.json`` ("" when none is read)."""
    from agent.config.jsonfile import read_json_file

    if not fleet:
        return ""
    folder = fleet if os.path.isdir(fleet) else os.path.dirname(fleet)
    try:
        obj = read_json_file(os.path.join(folder, "testbed.json"), UsageError, "testbed.json")
        pol = obj.get("fleet", {}).get("policy")
    except (UsageError, AttributeError):
        return ""
    return pol if isinstance(pol, str) else ""


class RecordsOut:
    """The run folder of one submit run under ``out_dir``: ``submit.json`` and records."""

    def __init__(self, out_dir: str, info: Dict[str, Any]):
        from agent.ops.atomic import write_atomic
        from agent.testbed.rundir import RunLock, new_run_dir

        self.run_dir = new_run_dir(out_dir)
        self.lock = RunLock(self.run_dir)
        self.info = dict(info, started_wall=time.time())
        self.path = os.path.join(self.run_dir, RECORDS_FILE)
        write_atomic(os.path.join(self.run_dir, INFO), json.dumps(self.info, indent=1) + "\n")
        self.fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                         0o644)
        self.written = 0

    def write(self, rec: Dict[str, Any]) -> None:
        """Append one record: the whole line in one write (a crash tears only the last)."""
        line = (json.dumps(rec, allow_nan=False) + "\n").encode("utf-8")
        if self.fd is not None:
            os.write(self.fd, line)
            self.written += 1

    def close(self, **outcome: Any) -> None:
        """Close the records and rewrite ``submit.json`` with ``outcome`` (sent, interrupted,
        ...); the lock goes last, so ``report`` never sees a finished run half written."""
        from agent.ops.atomic import write_atomic

        if self.fd is None:
            return
        os.close(self.fd)
        self.fd = None
        self.info.update(outcome, finished_wall=time.time(), records=self.written)
        try:
            write_atomic(os.path.join(self.run_dir, INFO), json.dumps(self.info, indent=1) + "\n")
        finally:
            self.lock.close()


def record(a: Any, sent_mono: float, sent_wall: float, source: str,
           label: Optional[int]) -> Dict[str, Any]:
    """The task record of answer ``a`` (``agent.fleet.client.Answer``) to an input sent at
    ``sent_mono`` (``label``: None or -1 when the file gives none)."""
    answered = not a.reason.startswith(("no answer within", "not awaited", "not sent"))
    rec: Dict[str, Any] = {"id": a.id, "source": source, "status": a.outcome,
                           "reason": a.reason or None, "created_mono": sent_mono,
                           "created_wall": sent_wall}
    if answered:
        rec.update(finished_mono=sent_mono + a.delay_s, delay_s=a.delay_s)
    rec["exit_stage"] = a.exit_stage if a.ok else None
    if a.ok:
        rec.update(cls=a.cls, confidence=a.confidence)
    has_label = label is not None and label >= 0
    rec["label"] = int(label) if has_label else None
    rec["correct"] = (a.cls == label) if a.ok and has_label else None
    if a.detail:
        rec["detail"] = a.detail
    return rec


def submit_run_dir(path: str) -> Optional[str]:
    """The submit run folder ``path`` names (itself, or the run ``path/latest`` points to);
    None when it is none (a testbed run, or nothing)."""
    if os.path.isfile(os.path.join(path, INFO)):
        return os.path.abspath(path)
    latest = os.path.join(path, "latest")
    if os.path.isfile(os.path.join(latest, INFO)) and not os.path.isfile(
            os.path.join(latest, "testbed.json")):
        return os.path.realpath(latest)
    return None


def load_submit_run(run_dir: str):
    """A submit run folder read back as ``agent.testbed.history.PastRun`` (one row; see the
    module docstring); ``UsageError`` naming the file when ``submit.json`` or the records
    cannot be read."""
    from agent.config.jsonfile import read_json_file
    from agent.testbed.history import PastRun
    from agent.testbed.report import _delay, damaged_lines, read_records, summarise_records
    from agent.testbed.rundir import in_use

    path = os.path.join(run_dir, INFO)
    info = read_json_file(path, UsageError, "submit run")
    rate = info.get("rate_tasks_s", 0.0) if isinstance(info, dict) else None
    if not isinstance(info, dict) or not isinstance(rate, (int, float)) or isinstance(
            rate, bool) or not 0 <= rate <= 1e6:
        raise UsageError("%s: not a submit run's %s (an object with rate_tasks_s in [0, 1e6])"
                         % (path, INFO))
    policy = info.get("policy") if isinstance(info.get("policy"), str) and info.get(
        "policy") else UNKNOWN_POLICY
    bad: List[int] = []
    recs = read_records(os.path.join(run_dir, RECORDS_FILE), bad)
    # one pass over the records (a long run holds hundreds of thousands): the span of their
    # sends, and the delays and labelled answers of the completed ones
    first = last = None
    labelled = right = 0
    delays: List[float] = []
    for r in recs:
        c = r.get("created_mono")
        if isinstance(c, (int, float)):
            first = c if first is None or c < first else first
            last = c if last is None or c > last else last
        if r.get("status") != "completed":
            continue
        correct = r.get("correct")
        if correct is not None:
            labelled += 1
            right += correct is True
        d = _delay(r)
        if d is not None:
            delays.append(d)
    span_s = last - first if first is not None else 0.0
    res = summarise_records(recs, policy, float(rate), False, duration_s=span_s)
    # as submit's own line: over the completed inputs that have a label (None: no label)
    res.accuracy = right / float(labelled) if labelled else None
    res.note = "submit: delays on the client's clock, including the client hop"
    info = dict(info, topology=None)  # no topology: the heading names the endpoint instead
    notes = []
    if info.get("interrupted"):
        notes.append("%s: the run was interrupted (%s): inputs in flight then are recorded "
                     "lost, \"not awaited\"" % (path, info["interrupted"]))
    return PastRun(run_dir, info, [res], {(policy, float(rate)): delays}, in_use(run_dir), [],
                   [damaged_lines(os.path.join(run_dir, RECORDS_FILE), bad)] if bad else [],
                   notes, 1)
