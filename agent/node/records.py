"""A source's task records on disk: ``records.jsonl`` and its journal of open tasks.

One final line per created task, across crashes and full disks:

- **Journal** (``<state_dir>/records.jsonl.journal``): when a task is created, a ``+{id, created_wall,
  created_mono, label}`` line is written at once (one ``write``: it survives a SIGKILL of the
  agent); once the task's final line is durable in ``records.jsonl`` (the next group commit,
  ``agent.node.journal``: about once a second), a ``-id`` line follows. At start-up
  every ``+`` without a ``-`` whose id has no line in ``records.jsonl`` either is a task the
  previous run created and never recorded: it gets a ``lost`` line with reason ``crash``. The
  journal is rewritten (atomically) once it has grown well past the open tasks (by any run).
- **Rotation**: before a flush that would take ``records.jsonl`` past ``max_bytes`` (checked
  once a flush), the journal is first compacted to the open tasks (whose final lines are all
  still to come), then the file is renamed to ``records.jsonl.1`` (``.1`` to ``.2`` and so on,
  keeping ``keep_files``) and a new one started. So every task in the journal has its final
  line, if any, in the current file, and the start-up scan for them reads that file only:
  about ``max_bytes`` plus one flush's lines. While the journal cannot be compacted (a full
  disk, given-up lines not yet recovered) the file grows on and rotation waits. A
  ``records.jsonl`` renamed or deleted by something else is noticed at the next flush, which
  starts a new one.
- **Records** are buffered and appended by ``flush`` (every ``records_flush_interval_s``) in
  writes of at most ``FLUSH_CHUNK_BYTES`` of whole lines, oldest first; a write that fails
  part-way (``ENOSPC``) is cut back, so the file never holds a torn line, and the lines before
  it stay written (freed space takes what fits of a backlog, not all of it or nothing).
  Unwritten lines stay buffered and are written when space returns; beyond ``max_buffered``
  lines the oldest are given up and counted (``records_dropped``), and nothing of their tasks
  stays in memory: their journal lines, kept from compaction meanwhile, are read again at the
  next successful write, and those tasks then get a ``lost`` line with reason ``unrecorded``
  (``recovered``), as after a crash. A torn last line left by an earlier crash is cut off at
  start-up (its task is then recovered from the journal), and so is a torn last journal line
  (a line appended after it would be unreadable).

Durability: a group commit (``journal.GroupCommit``) syncs the records, then writes the ``-``
lines they cover, then syncs the journal, at most once per ``COMMIT_GAP_S`` (at a flush) and
before a compaction or rotation: a power cut loses at most the last second or so of lines, and
never leaves a ``-`` line whose record line it took.

Failed writes are counted and logged at most once a minute (``agent.ops.files.WriteFaults``);
nothing here raises ``OSError`` once the files are open.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.node.appendfile import append_fd, cut_torn_tail, sync_data, write_whole
from agent.node.journal import GroupCommit, line_count, unrecorded
from agent.node.records_rotation import remove_past, rotate_files
from agent.ops.atomic import fsync_dir, write_atomic
from agent.ops.files import WriteFaults
from agent.ops.reserve import RESERVE_BYTES, SpareRoom

log = logging.getLogger("agent.run")

MAX_BUFFERED_RECORDS = 20000  # unwritten record lines kept while the disk is full (~7 MB)
FLUSH_CHUNK_BYTES = 1 << 20  # one write's lines at most (a backlog after a full disk goes in parts)
JOURNAL_SUFFIX = ".journal"
RESERVE_SUFFIX = ".reserve"  # room kept for a journalled writer's final flush (ops.reserve)
MAX_UNTRACED_LOGGED = 1000  # record lines logged because neither they nor their journal fit


class RecordWriter:
    """Appends JSON record lines with a crash journal; see the module docstring."""

    def __init__(self, path: str, journal: bool = True, max_buffered: int = MAX_BUFFERED_RECORDS,
                 faults: Optional[WriteFaults] = None,
                 journal_faults: Optional[WriteFaults] = None,
                 max_bytes: int = 0, keep_files: int = 1, boot: str = "",
                 clock: Callable[[], float] = time.monotonic):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self.journal_path = path + JOURNAL_SUFFIX if journal else ""
        self.max_buffered = max_buffered
        self.boot = boot  # ops.boot tag journalled with each task: its created_mono holds on it
        self.max_bytes = max_bytes  # rotate past this size; 0 = never
        self.keep_files = max(1, keep_files)
        self.rotations = 0  # times the file was rotated by this writer
        self.files_deleted = 0  # ... and the oldest kept file deleted with it (its records gone)
        self.faults = faults or WriteFaults("records " + path)
        self.journal_faults = journal_faults or WriteFaults("record journal " + path + JOURNAL_SUFFIX)
        self.rotation_faults = WriteFaults("records rotation " + path)
        self.sync_faults = WriteFaults("records sync " + path)  # fdatasync failed: retried
        self.commit = GroupCommit(clock=clock)
        torn = cut_torn_tail(path)
        if torn:
            log.warning("%s ended in a torn line (%d bytes, from a crash); removed it", path, torn)
        self._fd = append_fd(path)
        self._buf: "OrderedDict[int, Tuple[str, str]]" = OrderedDict()  # seq -> (task id, line)
        self._seq = 0
        self.open_tasks: Dict[str, Dict[str, Any]] = {}  # journalled, final line not on disk yet
        # final line written, not yet synced: their "-" lines wait for the next commit
        self._closing: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        self.dropped = 0  # record lines given up (the disk stayed full too long)
        self._jfd, self._journal_lines = -1, 0  # the journal's fd and lines (see below)
        self._recovered: List[Dict[str, Any]] = []
        self.given_up = 0  # tasks whose line was given up since the journal was last read
        self._unjournalled: set = set()  # open tasks whose journal line failed (a full disk)
        self.untraced = 0  # record lines given up whose task had no journal line either
        self.spare = SpareRoom(path + RESERVE_SUFFIX, RESERVE_BYTES if journal else 0)
        if journal and not self.spare.held:  # made at start only: said once, here
            log.warning("cannot keep %s (%d bytes of room for the last record lines at a stop; "
                        "%s): a stop while the disk is full may leave lines unwritten, their "
                        "tasks recorded lost (crash) at the next start", self.spare.path,
                        RESERVE_BYTES, _free_space(path))
        if self.journal_path:
            self._recovered = unrecorded(self.journal_path, self.path)
            cut_torn_tail(self.journal_path)
            self._journal_lines = line_count(self.journal_path)  # a crash loop's lines count
            self._jfd = append_fd(self.journal_path)

    # -- journal -----------------------------------------------------------------------------

    def recovered(self) -> List[Dict[str, Any]]:
        """Journalled tasks without a final line (``id, created_wall, created_mono, label``),
        once: the earlier run's at start-up (the caller records each ``lost``, reason
        ``crash``), later those whose line was given up (reason ``unrecorded``)."""
        out, self._recovered = self._recovered, []
        for entry in out:
            self.open_tasks[str(entry["id"])] = entry
        return out

    def opened(self, task_id: str, created_wall: float, created_mono: float, label: int) -> None:
        """Journal a task just created (written at once, before the task goes anywhere)."""
        entry = {"id": task_id, "created_wall": created_wall, "created_mono": created_mono,
                 "label": label}
        if self.boot:
            entry["boot"] = self.boot
        self.open_tasks[task_id] = entry
        if not self._journal(b"+" + json.dumps(entry, separators=(",", ":")).encode("utf-8")
                             + b"\n") and self.journal_path:
            self._unjournalled.add(task_id)  # only its record line will tell its outcome

    def _journal(self, data: bytes) -> bool:
        if not self.journal_path:
            return False
        try:
            if self._jfd < 0:  # lost (a failed reopen after compaction): try again
                self._jfd = append_fd(self.journal_path)
            write_whole(self._jfd, data)
            self.commit.journal = True
            self._journal_lines += data.count(b"\n")
            self.journal_faults.succeeded()
            return True
        except OSError as exc:
            self.journal_faults.failed(exc)
            return False

    def _compact(self, faults: Optional[WriteFaults] = None) -> bool:
        """Rewrite the journal with only the open tasks (atomically and durably: a power cut
        must not keep the rename and lose the lines); False when the rewrite failed (the
        journal is then as it was; counted on ``faults``)."""
        text = "".join("+%s\n" % json.dumps(e, separators=(",", ":"))
                       for e in list(self.open_tasks.values()) + list(self._closing.values()))
        try:
            write_atomic(self.journal_path, text, durable=True)
            self.commit.syncs += 2  # the new file and the folder
        except OSError as exc:
            (faults or self.journal_faults).failed(exc, " (compaction)")
            return False
        self._unjournalled.clear()  # every open task has its line in the new journal
        if self._jfd >= 0:
            os.close(self._jfd)
        self._jfd = -1
        try:
            self._jfd = append_fd(self.journal_path)
        except OSError as exc:
            self.journal_faults.failed(exc)
            return True
        self._journal_lines = len(self.open_tasks) + len(self._closing)
        return True

    def _due_rotation(self, adding: int) -> bool:
        """True when ``adding`` bytes would take a non-empty file past ``max_bytes`` (its size
        read now: a copy-and-truncate by an outside tool counts)."""
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return False
        return size > 0 and size + adding > self.max_bytes

    def _follow_path(self) -> None:
        """Write to a new file at ``path`` when the open one was moved or deleted there (an
        operator's ``rm`` or ``mv``, a rename-style logrotate): lines written to an unlinked
        file would be lost to everyone."""
        try:
            try:
                if os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                    return
            except FileNotFoundError:
                pass
            fd = append_fd(self.path)
        except OSError as exc:
            self.rotation_faults.failed(exc, " (reopening %s)" % self.path)
            return
        self.sync()  # the lines written to the old file: their "-" lines
        self.commit.folder = True
        os.close(self._fd)
        self._fd = fd
        log.warning("%s was moved or deleted while open: writing to a new %s", self.path,
                    self.path)

    def _rotate(self) -> None:
        """records.jsonl -> .1 (-> .2 ...), a new records.jsonl; see the module docstring.
        A failure is counted on ``rotation_faults`` (apart from the writes, which go on into
        the same file and work)."""
        faults = self.rotation_faults
        if self.journal_path:
            if (not self.sync() or self.given_up or self._recovered or self._closing
                    or not self._compact(faults)):
                return  # the journal still names tasks recorded in this file: grow on
        try:
            fd, gone = rotate_files(self.path, self.keep_files)
        except OSError as exc:
            faults.failed(exc, " (writing on to the same file)")
            return
        os.close(self._fd)
        self._fd = fd
        self.commit.folder = True  # the renames and the new file: durable at the next commit
        self.rotations += 1
        self.files_deleted += gone + remove_past(self.path, self.keep_files)
        faults.succeeded()
        log.info("%s would pass %d bytes: rotated to %s.1 (keeping %d older file(s)%s)",
                 self.path, self.max_bytes, self.path, self.keep_files,
                 "; the oldest, %s.%d, deleted" % (self.path, self.keep_files) if gone else "")

    # -- records -----------------------------------------------------------------------------

    def write(self, record: Dict[str, Any]) -> None:
        """Buffer one final record line (written by the next ``flush``)."""
        self._seq += 1
        self._buf[self._seq] = (str(record.get("id")), json.dumps(record, separators=(",", ":")))
        while len(self._buf) > self.max_buffered:
            _, (tid, line) = self._buf.popitem(last=False)
            self.dropped += 1
            self.faults.failed(OSError("buffer full"), " (record of %s given up)" % tid)
            # nothing of it kept (a full disk may last): its journal line stands for it
            if tid in self._unjournalled:  # none: the log is the one place left for it
                self._unjournalled.discard(tid)
                self._untraced(line)
            if self.open_tasks.pop(tid, None) is not None and self.journal_path:
                self.given_up += 1

    @property
    def buffered(self) -> int:
        """Record lines waiting to be written."""
        return len(self._buf)

    def flush(self) -> bool:
        """Append the buffered lines, oldest first, in writes of whole lines of at most
        ``FLUSH_CHUNK_BYTES`` (after a full disk what fits is written, not all or nothing);
        False (counted, logged) when one failed: the lines from there on stay buffered. Then
        the group commit, when due (``sync``)."""
        if self._fd < 0:
            return not self._buf
        ok = self._append() if self._buf else True
        if self.commit.due():
            self.sync()
        return ok

    def _append(self) -> bool:
        self._follow_path()
        rotate = bool(self.max_bytes)  # once a flush at most: a backlog after a full disk
        while self._buf:  # rotating per part would delete what it had just written
            lines, size = [], 0
            for seq, (tid, line) in self._buf.items():
                if lines and size + len(line) + 1 > FLUSH_CHUNK_BYTES:
                    break
                lines.append((seq, tid, line))
                size += len(line) + 1
            data = ("\n".join(line for _, _, line in lines) + "\n").encode("utf-8")
            if rotate and self._due_rotation(len(data)):
                self._rotate()
            rotate = False
            try:
                write_whole(self._fd, data)
            except OSError as exc:
                self.faults.failed(exc, " (%d record line(s) kept in memory, written when "
                                        "it works again)" % len(self._buf))
                return False
            for seq, _, _ in lines:
                del self._buf[seq]
            self._written([tid for _, tid, _ in lines])
        self.faults.succeeded()
        if self.journal_path and self.given_up:  # the disk works again: the given-up tasks,
            # from their journal lines
            self._recovered += unrecorded(self.journal_path, self.path,
                                          list(self.open_tasks) + list(self._closing))
            self.given_up = 0
        return True

    def _written(self, ids: List[str]) -> None:
        """The final lines of ``ids`` are written: they leave the open tasks; their ``-`` lines
        wait for the next commit (``sync``), which first makes these lines durable."""
        self.commit.records = True
        for tid in ids:
            entry = self.open_tasks.pop(tid, None)
            if entry is not None and self.journal_path:
                self._closing[tid] = entry
        self._unjournalled.difference_update(ids)

    def sync(self) -> bool:
        """The group commit (``agent.node.journal``): sync the folder (after a file was made or
        renamed), the records, then write the ``-`` lines of the tasks whose record lines that
        made durable, and sync the journal (or compact it, durably, when it has grown well past
        the open tasks). False when a sync failed (counted on ``sync_faults``; the next commit retries,
        and the ``-`` lines wait for it)."""
        c = self.commit
        if not (c.dirty() or self._closing):
            return True
        c.last = c.clock()
        try:
            if c.folder:
                fsync_dir(os.path.dirname(os.path.abspath(self.path)))
                c.folder, c.syncs = False, c.syncs + 1
            if c.records and self._fd >= 0:
                _sync(self._fd)
                c.records, c.syncs = False, c.syncs + 1
            closing, self._closing = self._closing, OrderedDict()
            if closing:  # their record lines are on the disk now; never written before that
                self._journal("".join("-%s\n" % tid for tid in closing).encode("utf-8"))
            if (self.journal_path and self._journal_lines > 2 * len(self.open_tasks) + 1000
                    and not self._recovered and self._compact()):
                c.journal = False  # the new journal was synced whole: no sync of the old
            if c.journal and self._jfd >= 0:
                _sync(self._jfd)
                c.journal, c.syncs = False, c.syncs + 1
        except OSError as exc:
            self.sync_faults.failed(exc, " (synced at the next commit)")
            return False
        self.sync_faults.succeeded()
        c.commits += 1
        return True

    def flush_unless_failing(self) -> None:
        """Write the buffered lines now, unless the last write failed (then the periodic
        ``flush`` retries: a full disk is not written to on every loop pass)."""
        if self._buf and not self.faults.failing:
            self.flush()

    def _untraced(self, line: str) -> None:
        """A record line with no place on disk: logged at ERROR (past a bound, counted)."""
        self.untraced += 1
        if self.untraced <= MAX_UNTRACED_LOGGED:
            log.error("record not written to %s (disk full; its task has no journal line "
                      "either): %s", self.path, line)

    def has_recovered(self) -> bool:
        """True when ``recovered`` has tasks to hand out."""
        return bool(self._recovered)

    def close(self) -> None:
        """Flush (on a full disk again, in the room kept for it), then close the files; a line
        still unwritten is a ``crash`` record at the next start, or without a journal line an
        ERROR line."""
        if not self.flush() and self.spare.release():
            self.flush()
        self.spare.release()
        self.sync()  # a clean stop leaves every line durable and the "-" lines written
        untraced = [line for tid, line in self._buf.values() if tid in self._unjournalled]
        if len(self._buf) > len(untraced):
            log.warning("%d record line(s) could not be written to %s before exit; their tasks "
                        "are recorded as lost (crash) at the next start",
                        len(self._buf) - len(untraced), self.path)
        for line in untraced:
            self._untraced(line)
        if self.journal_path and not (self._buf or self.open_tasks or self.given_up
                                   or self._recovered or self._closing):
            self._compact()
        for fd in (self._fd, self._jfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._jfd = -1


def _sync(fd: int) -> None:
    """``sync_data``; a file that cannot be synced (``EINVAL``: a device such as /dev/null)
    holds nothing a power cut could take, so it counts as synced."""
    try:
        sync_data(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


def _free_space(path: str) -> str:
    """The room left on ``path``'s file system, for a log line."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        return "free space unknown: %s" % (exc.strerror or exc)
    return "%d bytes free" % (st.f_bavail * st.f_frsize)
