"""The cyclic garbage collector in a serving agent: start-up objects out of its full passes.

An agent builds its node once (engines, bundle and exit profile, every module it imports: about
35,000 objects the collector tracks, for a demo worker) and then serves for weeks, making
short-lived dicts and objects per task. Each full collection (one per ~40,000 tasks on a busy
worker) walked every start-up object again: 32-35 ms with the loop stopped, no ACK, heartbeat
or result leaving meanwhile (``bench/worker_path.py``). ``freeze_startup_objects`` collects
once, when the node is built, and moves everything alive into the collector's permanent
generation (``gc.freeze``, Python 3.7+): full collections then walk what serving made, 5-8 ms.
Reference counting still frees a frozen object that loses its last reference; only a cycle
among start-up objects that became garbage later would stay (start-up builds few).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect, then take every object alive out of future collections; how many were frozen.

    Called once, by the composition root (``agent.node.build.serve``), after the node is
    built and before it serves.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("collector: %d start-up objects frozen", frozen)
    return frozen
