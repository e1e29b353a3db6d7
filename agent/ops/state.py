"""Agent state that survives a restart: routing, thresholds, capacity estimate, the links'
measured rates (no slot number: DTO-EE takes its slot from the wall clock at each tick, so a
clock stepped across a restart needs nothing undone). ``saved_unix_s`` is a label for people:
no age check reads it, which a wall clock stepped since the save would fool.

``StateStore.save`` replaces ``state.json`` through ``agent.ops.atomic`` (temporary file, fsync,
rename, directory fsync), so a crash (SIGKILL, power loss) leaves either the old or the new
state, never a torn file. ``load`` returns None when there is nothing usable and
says why in the log; a corrupt file is kept aside as ``state.json.corrupt`` for inspection.
Restored state is input like any other: ``check_state`` refuses non-finite numbers (JSON's
``Infinity``/``NaN``), routing rows that are not probabilities summing to 1, thresholds
outside (0, 1] and link rates not above 0, so a poisoned file is dropped with a warning instead of steering the policy.
JSON turns dict keys into strings: callers restore int keys (stages) themselves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import sys
import time
from typing import Any, Dict, Mapping, Optional

from agent.ops.atomic import write_atomic
from agent.ops.files import FileFault, read_bounded

log = logging.getLogger(__name__)

# the files a node keeps in its state_dir, named once for every reader and writer
STATE_FILE = "state.json"  # saved policy state (this module)
STATS_FILE = "stats.json"  # counters and status, rewritten every status_interval_s
RECORDS_FILE = "records.jsonl"  # a source's task records (agent.node.records)
PROFILE_NAME = "calibration.json"  # the capacity profile calibrate writes (calibration.profile)
# the service's StateDirectory= (systemd/edge-agent.service), where a device keeps its state
DEFAULT_STATE_DIR = "/var/lib/edge-agent"
FORMAT_VERSION = 1
STATE_MAX_BYTES = 16 * 1024 * 1024  # routing and thresholds: a few kB
ROUTING_KEYS = ("routing",)  # {successor: probability}: each in [0, 1], summing to 1
THRESHOLD_KEYS = ("thresholds", "dtoee_thresholds", "mdi_threshold")  # each in (0, 1]
ROW_SUM_TOLERANCE = 1e-6
LINK_RATES_KEY = "link_rates_bytes_s"  # {peer: measured bytes/s}: each > 0
# counts kept for diagnosis, not decisions: a state that differs only in these is not written
# again (DTO-EE counts its settled phases every slot, so an idle agent fsynced every slot);
# they reach the file with the next real change and at shutdown (``force``)
COUNTER_KEYS = ("dtoee_phases",)


def default_state_dir(environ: Mapping[str, str]) -> str:
    """The state directory of a command run without one: systemd's ``$STATE_DIRECTORY`` (its
    first entry) where a unit sets it, else ``DEFAULT_STATE_DIR``."""
    return (environ.get("STATE_DIRECTORY") or "").split(":")[0] or DEFAULT_STATE_DIR


def _refuse_constant(name: str) -> float:
    raise ValueError("non-finite number %s" % name)


def _numbers(value: Any, where: str):
    """Every number in a JSON value, with its path."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _numbers(v, "%s.%s" % (where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, "%s[%d]" % (where, i))


def check_state(state: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the entry when saved state is not what a policy may restore."""
    for where, v in _numbers(state, "state"):
        # an int past a float's range (JSON writes any digits) is no number a policy can use:
        # isfinite's OverflowError on it would escape ``load`` and stop every start
        if abs(v) > sys.float_info.max if isinstance(v, int) else not math.isfinite(v):
            raise ValueError("%s is %.40r" % (where, v))
    for key in ROUTING_KEYS:
        row = state.get(key)
        if row is None:
            continue
        if not isinstance(row, Mapping) or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool) for p in row.values()):
            raise ValueError("state.%s is not a table of probabilities" % key)
        if any(not 0.0 <= p <= 1.0 for p in row.values()):
            raise ValueError("state.%s has a probability outside [0, 1]: %r" % (key, dict(row)))
        if row and abs(sum(row.values()) - 1.0) > ROW_SUM_TOLERANCE:
            raise ValueError("state.%s sums to %r, not 1" % (key, sum(row.values())))
    rates = state.get(LINK_RATES_KEY)
    if rates is not None and (not isinstance(rates, Mapping) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
            for r in rates.values())):
        raise ValueError("state.%s is not a table of rates > 0 bytes/s" % LINK_RATES_KEY)
    for key in THRESHOLD_KEYS:
        value = state.get(key)
        values = value.values() if isinstance(value, Mapping) else [value]
        for c in values:
            if value is not None and (isinstance(c, bool) or not isinstance(c, (int, float))
                                      or not 0.0 < c <= 1.0):
                raise ValueError("state.%s holds %r, not a threshold in (0, 1]" % (key, c))


class StateStore:
    """Atomic JSON persistence of one agent's state in ``directory``."""

    def __init__(self, directory: str, filename: str = STATE_FILE) -> None:
        self.directory = str(directory)
        self.path = os.path.join(self.directory, filename)
        self._saved = ""  # the state last written, as JSON: an equal one is not written again
        self.skipped = 0  # saves left out because nothing had changed

    def save(self, state: Dict[str, Any], force: bool = False) -> bool:
        """Atomically replace the stored state with ``state`` (JSON-serialisable dict); False
        when, but for its ``COUNTER_KEYS``, it equals the state this store last wrote and the
        file is still there (nothing written: an idle agent would otherwise replace it, with two
        fsyncs, every slot), unless ``force`` (a stop: the counts too)."""
        if not isinstance(state, dict):
            raise TypeError("state must be a dict, got %s" % type(state).__name__)
        text = json.dumps({k: v for k, v in state.items() if k not in COUNTER_KEYS},
                          sort_keys=True, allow_nan=False)
        if text == self._saved and not force and os.path.isfile(self.path):
            self.skipped += 1
            return False
        doc = {"format_version": FORMAT_VERSION, "saved_unix_s": time.time(), "state": state}
        data = json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8")
        os.makedirs(self.directory, exist_ok=True)
        # durable although saved every slot: the state exists to survive a power cut
        write_atomic(self.path, data, perms=0o600)
        self._saved = text
        return True

    def load(self) -> Optional[Dict[str, Any]]:
        """The last saved state, or None when absent or unusable (logged, never raised)."""
        if not os.path.lexists(self.path):
            return None
        try:  # bounded and non-blocking: a FIFO or a huge file in its place cannot stall start-up
            raw = read_bounded(self.path, "saved state", STATE_MAX_BYTES)
        except FileFault as exc:
            size = _oversized_bytes(self.path)
            if not size:  # a FIFO or device: nothing of ours to set aside
                log.warning("cannot read %s; starting fresh", exc)
                return None
            return self._set_aside("%d bytes, more than the %d a saved state can be"
                                   % (size, STATE_MAX_BYTES))
        try:
            doc = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
            if not isinstance(doc, dict) or not isinstance(doc.get("state"), dict):
                raise ValueError("no 'state' object")
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError("format_version %r, expected %d"
                                 % (doc.get("format_version"), FORMAT_VERSION))
            check_state(doc["state"])
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the stack
            return self._set_aside(str(exc))
        return doc["state"]

    def _set_aside(self, why: str) -> None:
        """Move an unusable ``state.json`` to ``state.json.corrupt`` (kept for inspection; the
        next save must not overwrite it) and say so."""
        aside = self.path + ".corrupt"
        log.warning("saved state %s is unusable (%s); moved to %s, starting fresh",
                    self.path, why, aside)
        try:
            os.replace(self.path, aside)
        except OSError:
            pass
        return None


def _oversized_bytes(path: str) -> int:
    """The size of ``path`` when it is a regular file larger than a saved state can be, else
    0."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > STATE_MAX_BYTES else 0
