"""Source-side bookkeeping: the replay set, tasks in flight, and every task's fate on disk.

A source creates tasks (Poisson arrivals from a replay set, or tasks a local client pushes),
keeps each until its result arrives, re-issues it (a new ``attempt``) when no result came within
``result_timeout_s``, and records exactly one line per created task in
``<state_dir>/records.jsonl``: completed, lost (no result after ``max_attempts`` issues or at
shutdown) or rejected (admission control said no).

Records and their crash journal are written by ``records.RecordWriter`` (one final line per
task across SIGKILL and full disks; see there). Record fields: ``id, source, status, created_wall, created_mono, finished_wall, finished_mono,
delay_s, exit_stage, cls, label, correct, confidence, hops, resends, attempts, worker, reason,
row, level``: ``row`` is the replay-set row a Poisson task was drawn from (None for a client's
task), ``level`` the answering level a RESULT names (MLCI; None otherwise).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from agent.errors import UsageError
from engines.npzfile import load_npz
from engines.profile import as_input, check_set_range
from agent.ops.samples import checked_inputs, checked_labels
from agent.node.records import RecordWriter
from agent.policies.splits import rows_named

__all__ = ["Pending", "RecordWriter", "ReplaySet", "SourceBook"]

log = logging.getLogger(__name__)


def open_replay(cfg: Any, bundle: Any) -> "ReplaySet":
    """A source config's replay set (``replay_path``; the demo set when it names none), checked
    against the bundle's stage-1 input: ``UsageError`` naming replay_path when it does not fit;
    one WARNING when its values are on another scale than the model's training inputs (the
    bundle's ``input.value_range``): the source serves it all the same."""
    from engines.demo import REPLAY_PATH

    first = bundle.stage(1)
    path = cfg.replay_path or REPLAY_PATH
    replay = ReplaySet(path, first.input_shape, first.input_dtype, cfg.replay_rows)
    check_set_range(replay.x, first.input_value_range, "replay_path: %s" % path,
                    "the source sends it as it is (its accuracy suffers)", log)
    return replay


class ReplaySet:
    """Samples to send: ``x`` (N, ...) inputs and ``y`` (N,) labels from an npz file; ``rows``
    (``all``, ``test``: odd rows, ``validation``: even rows) says which rows are drawn."""

    def __init__(self, path: str, input_shape: Tuple[int, ...], input_dtype: str,
                 rows: str = "all"):
        data = load_npz(path, "replay_path")
        if "x" not in data or "y" not in data:
            raise UsageError("replay_path: cannot read x and y from %s: it holds %s"
                             % (path, ", ".join(sorted(data)) or "no arrays"))
        x, y = checked_inputs(data["x"], "replay_path: %s" % path), data["y"]
        if y.ndim == 0:
            raise UsageError("replay_path: %s: y must hold one label per input, got a single "
                             "value" % path)
        if len(x) == 0 or len(x) != len(y) or tuple(x.shape[1:]) != tuple(input_shape[1:]):
            raise UsageError("replay_path: %s has x %s, y %s; stage 1 needs x (N,%s)"
                             % (path, x.shape, y.shape, ",".join(map(str, input_shape[1:]))))
        # uint8 images scaled to [0, 1] for a float input, as `heads` and `profile` read them
        self.x = np.ascontiguousarray(as_input(x, input_dtype))
        self.y = checked_labels(y, len(x), "replay_path: %s" % path)
        self.rows = None if rows == "all" else rows_named(rows, len(self.x))
        if self.rows is not None and not len(self.rows):
            raise UsageError("replay_rows: %s has no %s rows" % (path, rows))
        # (min, max) of every input value: what the stage-1 engine is fed (clients' inputs
        # are compared with it, so unscaled images are told, not answered wrong)
        self.value_range = (float(self.x.min()), float(self.x.max()))
        # the engine takes images on [0, 1]: stored as uint8 (scaled above) or as floats there;
        # a client's uint8 images are then scaled too (a model fed 0-255 floats is not)
        self.unit_scale = self.x.dtype.kind == "f" and (
            x.dtype == np.uint8 or (0.0 <= self.value_range[0] and self.value_range[1] <= 1.0))

    def sample(self, rng: random.Random) -> Tuple[np.ndarray, int]:
        x, y, _ = self.sample_row(rng)
        return x, y

    def sample_row(self, rng: random.Random) -> Tuple[np.ndarray, int, int]:
        """(input (1, ...), label, row) of one uniformly drawn row of the chosen rows."""
        if self.rows is None:
            i = rng.randrange(len(self.x))
        else:
            i = int(self.rows[rng.randrange(len(self.rows))])
        return self.x[i:i + 1], int(self.y[i]), i


@dataclass
class Pending:
    """A task created here and not yet answered."""

    id: str
    x: np.ndarray
    label: int  # -1 when unknown (a client's task)
    created_wall: float
    created_mono: float
    attempt: int = 0
    resends: int = 0  # re-issues so far; each issue carries it, hops add their own re-sends
    result_due: float = 0.0  # monotonic time of the current attempt's result deadline
    client: Optional[Tuple[bytes, str]] = None  # (identity, client's own id) in client mode
    row: Optional[int] = None  # the replay row it was drawn from (None: a client's input)


class SourceBook:
    """Tasks in flight and the counters of their fates."""

    def __init__(self, node_id: str, records: RecordWriter):
        self.node_id = node_id
        self.records = records
        self.pending: Dict[str, Pending] = {}
        self.seq = 0
        self.created = self.completed = self.lost = self.rejected = 0
        self.recovered_lost = 0  # the earlier run's unrecorded tasks, recorded lost (crash)
        # called with "created" and each of this run's final statuses (metrics.source_task)
        self.on_outcome: Callable[[str], None] = lambda outcome: None

    def new(self, x: np.ndarray, label: int, wall: float, mono: float) -> Pending:
        self.seq += 1
        self.created += 1
        self.on_outcome("created")
        task = Pending(self._new_id(), x, label, wall, mono)
        self.records.opened(task.id, wall, mono, label)
        self.pending[task.id] = task
        return task

    def _new_id(self) -> str:
        """An unpredictable task id (64 random bits): nobody can guess another task's id."""
        return "%s-%s" % (self.node_id, os.urandom(8).hex())

    def reject(self, wall: float, mono: float, reason: str = "admission") -> None:
        """A task the fleet cannot take: it is created and recorded as rejected (``reason``)."""
        self.seq += 1
        self.created += 1
        self.rejected += 1
        self.on_outcome("created")
        self.on_outcome("rejected")
        task_id = self._new_id()
        self.records.opened(task_id, wall, mono, -1)
        self._record(task_id, "rejected", wall, mono, wall, mono, reason=reason)

    def complete(self, fields: Dict[str, Any], wall: float, mono: float) -> Optional[Pending]:
        """Record a result; None if the task is unknown or already answered (a duplicate)."""
        task = self.pending.pop(fields["id"], None)
        if task is None:
            return None
        self.completed += 1
        self.on_outcome("completed")
        self._record(task.id, "completed", task.created_wall, task.created_mono, wall, mono,
                     exit_stage=fields["exit_stage"], cls=fields["cls"],
                     label=task.label if task.label >= 0 else None,
                     correct=(fields["cls"] == task.label) if task.label >= 0 else None,
                     confidence=fields["confidence"], hops=fields["hops"],
                     resends=fields["resends"], attempts=task.attempt + 1,
                     worker=fields["worker"], row=task.row, level=fields.get("level"))
        return task

    def lose(self, task_id: str, wall: float, mono: float, reason: str) -> None:
        task = self.pending.pop(task_id, None)
        if task is None:
            return
        self.lost += 1
        self.on_outcome("lost")
        self._record(task.id, "lost", task.created_wall, task.created_mono, wall, mono,
                     label=task.label if task.label >= 0 else None, resends=task.resends,
                     attempts=task.attempt + 1, reason=reason, row=task.row)

    def _record(self, task_id: str, status: str, cw: float, cm: float, fw: float, fm: float,
                **extra: Any) -> None:
        rec = {"id": task_id, "source": self.node_id, "status": status, "created_wall": cw,
               "created_mono": cm, "finished_wall": fw, "finished_mono": fm, "delay_s": fm - cm,
               "exit_stage": None, "cls": None, "label": None, "correct": None,
               "confidence": None, "hops": 0, "resends": 0, "attempts": 0, "worker": None,
               "reason": None, "row": None, "level": None}
        rec.update(extra)
        self.records.write(rec)

    def recover(self, wall: float, mono: float, reason: str = "crash") -> int:
        """Record the tasks the journal shows without a final line as lost: at start-up the
        earlier run's (reason ``crash``), later those whose line was given up while the disk was
        full (``unrecorded``); returns how many. A crashed run's task is timed on the monotonic
        clock when its journal line names this boot, else on the wall clock (monotonic times of
        two boots do not compare), or null when the wall clock gives less than must have passed
        (``wall_delay_s``: a device without an RTC battery starts with a stale clock, and the
        agent may start before NTP steps it). Only ``crash`` ones count as
        ``crash_recovered``: a given-up line's task was counted when it ended, and its line in
        ``records_dropped``."""
        entries = self.records.recovered()
        for e in entries:
            label = e.get("label")
            cw, cm = _num(e.get("created_wall"), wall), _num(e.get("created_mono"), mono)
            boot = e.get("boot")
            same_boot = bool(self.records.boot) and boot == self.records.boot and cm <= mono
            # another boot for sure: all of this boot's monotonic time has passed since
            other_boot = bool(self.records.boot) and isinstance(boot, str) and bool(boot) \
                and boot != self.records.boot
            self._record(str(e["id"]), "lost", cw, cm, wall, mono,
                         label=label if isinstance(label, int) and label >= 0 else None,
                         reason=reason,
                         **({"delay_s": wall_delay_s(cw, wall, mono if other_boot else 0.0)}
                            if reason == "crash" and not same_boot else {}))
            if self.records.buffered >= self.records.max_buffered:  # none given up here
                self.records.flush()
        if reason == "crash":  # a given-up line's task is no crash: records_dropped has it
            self.recovered_lost += len(entries)
        if entries:
            self.records.flush()
        return len(entries)

    def counts(self) -> Dict[str, int]:
        return {"created": self.created, "completed": self.completed, "lost": self.lost,
                "rejected": self.rejected, "pending": len(self.pending),
                "crash_recovered": self.recovered_lost,
                "records_unwritten": self.records.buffered, "records_dropped": self.records.dropped,
                "records_untraced": self.records.untraced,
                "records_rotations": self.records.rotations,
                "records_files_deleted": self.records.files_deleted,
                "records_write_failed": self.records.faults.failures}


def wall_delay_s(created_wall: float, now_wall: float, least_s: float) -> Optional[float]:
    """Seconds from ``created_wall`` to ``now_wall`` on the wall clock, or None when that is
    less than ``least_s``, the time known to have passed (0, or this boot's monotonic time for
    a task of an earlier boot): the wall clock was stale or stepped between the two readings,
    and a negative or too short delay would be a made-up figure."""
    delay = now_wall - created_wall
    return delay if delay >= least_s else None


def _num(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else default
