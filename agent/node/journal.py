"""A source's record journal read back, and the group commit that makes records durable.

**Reading** (``unrecorded``): the tasks a journal names as created (``+`` line) and not as
recorded (``-`` line), less those whose final line ``records.jsonl`` holds: the ``-`` line of a
task is written some time after its record line, so a crash in between leaves a record with an
open ``+`` line, and only the record file can tell.

**Group commit** (``GroupCommit``): lines are written at once (a SIGKILL keeps them, the kernel
holds them), but only written back to the disk by the kernel within about 30 s, each file on
its own. Once every ``COMMIT_GAP_S`` at most (at a flush, never per task) the writer makes what
it wrote durable, records first: ``fdatasync`` of ``records.jsonl``, then the ``-`` lines of
the tasks whose record lines that covered are written, then ``fdatasync`` of the journal. So a
``-`` line is never on the disk before its record line (it is not even written before), and a
power cut takes at most the lines since the last commit: about ``records_flush_interval_s``
(1 s by default) or ``COMMIT_GAP_S``, whichever is longer, of them.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List

# at least this long between two group commits: the loop's flush every records_flush_interval_s
# (1 s by default) commits each time; a flush per loop pass (client mode) at most this often
COMMIT_GAP_S = 0.75
_RECORD_ID = re.compile(rb'\{\s*"id"\s*:\s*"((?:[^"\\]|\\.)*)"')  # records are written with "id" first


def unrecorded(journal_path: str, records_path: str,
               skip: Iterable[str] = ()) -> List[Dict[str, Any]]:
    """Journalled tasks that have no line in ``records_path`` (at start-up: the earlier run's),
    except those in ``skip`` (open in this run), oldest first."""
    opened: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
    try:
        with open(journal_path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn: the task was never handed out
                if raw.startswith(b"+"):
                    try:
                        entry = json.loads(raw[1:].decode("utf-8"))
                        opened[str(entry["id"])] = entry
                    except (ValueError, KeyError, TypeError):
                        continue
                elif raw.startswith(b"-"):
                    opened.pop(raw[1:].strip().decode("utf-8", "replace"), None)
    except FileNotFoundError:
        return []
    for task_id in skip:
        opened.pop(task_id, None)
    if not opened:
        return []
    try:  # a final line written before its "-" made it: in this file (see rotation)
        with open(records_path, "rb") as f:
            for raw in f:  # (a regex, not json: a long file must not slow the start much)
                m = _RECORD_ID.match(raw)
                if m:
                    opened.pop(m.group(1).decode("utf-8", "replace"), None)
    except FileNotFoundError:
        pass
    return list(opened.values())


def line_count(path: str) -> int:
    """Lines in the file at ``path`` (0 when there is none): an earlier run's journal lines,
    which count towards its compaction like this run's."""
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


class GroupCommit:
    """What was written since the last commit, and whether the next one is due."""

    def __init__(self, gap_s: float = COMMIT_GAP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gap_s = gap_s
        self.clock = clock
        self.last = -1e18  # monotonic time (s) of the last commit: none yet
        self.records = False  # record lines written since the last records sync
        self.journal = False  # journal lines written since the last journal sync
        self.folder = True  # a file made or renamed in the folder (and at start: created?)
        self.commits = 0  # commits that synced something
        self.syncs = 0  # fdatasync/fsync calls made by them (files and the folder)

    def dirty(self) -> bool:
        """True when something written is not known to be on the disk yet."""
        return self.records or self.journal or self.folder

    def due(self) -> bool:
        """True when something is to sync and the last commit is ``gap_s`` old."""
        return self.dirty() and self.clock() - self.last >= self.gap_s
