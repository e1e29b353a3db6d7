"""Agent state that survives a restart: routing, thresholds, capacity estimate, slot number.

``StateStore.save`` replaces ``state.json`` through ``agent.ops.atomic`` (temporary file, fsync,
rename, directory fsync), so a crash (SIGKILL, power loss) leaves either the old or the new
state, never a torn file. ``load`` returns None when there is nothing usable and
says why in the log; a corrupt file is kept aside as ``state.json.corrupt`` for inspection.
JSON turns dict keys into strings: callers restore int keys (stages) themselves.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, Optional

from agent.ops.atomic import write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
FORMAT_VERSION = 1


class StateStore:
    """Atomic JSON persistence of one agent's state in ``directory``."""

    def __init__(self, directory: str, filename: str = STATE_FILE) -> None:
        self.directory = str(directory)
        self.path = os.path.join(self.directory, filename)

    def save(self, state: Dict[str, Any]) -> None:
        """Atomically replace the stored state with ``state`` (JSON-serialisable dict)."""
        if not isinstance(state, dict):
            raise TypeError("state must be a dict, got %s" % type(state).__name__)
        doc = {"format_version": FORMAT_VERSION, "saved_unix_s": time.time(), "state": state}
        data = json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8")
        os.makedirs(self.directory, exist_ok=True)
        # durable although saved every slot: the state exists to survive a power cut
        write_atomic(self.path, data, perms=0o600)

    def load(self) -> Optional[Dict[str, Any]]:
        """The last saved state, or None when absent or unusable (logged, never raised)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read saved state %s: %s; starting fresh", self.path, exc)
            return None
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("state"), dict):
                raise ValueError("no 'state' object")
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError("format_version %r, expected %d"
                                 % (doc.get("format_version"), FORMAT_VERSION))
        except ValueError as exc:
            aside = self.path + ".corrupt"
            log.warning("saved state %s is unusable (%s); moved to %s, starting fresh",
                        self.path, exc, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return None
        return doc["state"]

