"""Two agents running under one node id, seen by the node they both send data to.

A device flashed from another's image, or a config copied by hand, starts a second agent with a
node id already in use. Both connect their DEALERs to the same neighbours under that id, and a
neighbour's ROUTER (``ROUTER_HANDOVER``) gives the id to whichever connected last: the other's
connection is cut, it reconnects and takes the id back, and so on. Tasks and ACKs go astray
meanwhile, and all either agent shows is a data connection that keeps dropping.

Each agent's DEALERs carry a run id, random per process, in their ZeroMQ handshake (the
``X-Run`` property, ``zmq.METADATA``), and a receiver reads it, with the sending host, from
the messages that arrive under each id (``Twins.observe``). A restarted agent shows a new run
id and the old one never comes back; two agents under one id take turns, so a run id that had
been replaced comes back. That return, within ``window_s``, is the signal: logged as a
WARNING naming both runs and hosts (at most once per ``log_interval_s`` per node id) and
counted (``duplicate_node_id``). Agents of a version without the property are not observed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

log = logging.getLogger("agent.node.loop")  # read with the loop's lines: one place to look

RUN_PROPERTY = "X-Run"  # the handshake property (ZeroMQ requires the X- prefix)
MAX_IDS = 256  # node ids remembered (an unauthenticated endpoint may be offered any number)
MAX_RUNS = 4  # run ids remembered per node id


def new_run_id() -> str:
    """A run id for this process: 8 random bytes in hex."""
    return os.urandom(8).hex()


class Twins:
    """This process's ``run_id`` (for its own DEALERs) and the watch over the run ids that
    arrive under each sender's node id."""

    def __init__(self, run_id: str, window_s: float = 120.0, log_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id = run_id
        self.window_s = window_s
        self.log_interval_s = log_interval_s
        self.clock = clock
        self.seen = 0  # returns of a replaced run id so far (the loop turns them into counts)
        # node id -> (its latest run id, {run id: (last seen, host)}); least recent id first
        self._ids: "OrderedDict[str, Tuple[str, Dict[str, Tuple[float, str]]]]" = OrderedDict()
        self._logged: Dict[str, Tuple[float, int]] = {}  # node id -> (last line, returns since)

    def observe(self, node_id: str, run: Optional[str], host: str = "") -> bool:
        """One message from ``node_id`` carrying ``run`` (None: the sender sets none) from
        ``host``; True when it shows a second agent under that id."""
        if not run:
            return False
        now = self.clock()
        entry = self._ids.get(node_id)
        if entry is None:
            self._ids[node_id] = (run, {run: (now, host)})
            if len(self._ids) > MAX_IDS:
                self._ids.popitem(last=False)
                self._logged = {k: v for k, v in self._logged.items() if k in self._ids}
            return False
        self._ids.move_to_end(node_id)
        latest, runs = entry
        before = runs.get(run)
        runs[run] = (now, host)
        if run == latest:
            return False
        self._ids[node_id] = (run, runs)
        for old in [r for r, (t, _) in runs.items() if now - t > self.window_s]:
            del runs[old]
        while len(runs) > MAX_RUNS:  # the least recently seen go first
            del runs[min(runs, key=lambda r: runs[r][0])]
        if before is None or now - before[0] > self.window_s:
            return False  # a new process under this id: a restart, as far as one can tell
        self.seen += 1
        self._warn(node_id, run, host, latest, runs.get(latest, (0.0, ""))[1], now)
        return True

    def _warn(self, node_id: str, run: str, host: str, other: str, other_host: str,
              now: float) -> None:
        at, since = self._logged.get(node_id, (-float("inf"), 0))
        if now - at < self.log_interval_s:
            self._logged[node_id] = (at, since + 1)
            return
        more = " (%d more times since the last line)" % since if since else ""
        log.warning("two agents are running as node %r: its data comes from two processes in "
                    "turn (run %s%s, run %s%s), each taking the connection from the other%s; "
                    "a copied node config? give each device its own node_id", node_id, run,
                    _at(host), other, _at(other_host), more)
        self._logged[node_id] = (now, 0)


def _at(host: str) -> str:
    return " at %s" % host if host else ""
