"""A rate of a local testbed run cut short (Ctrl-C, SIGTERM, a hang-up, an agent's death):
what is undone and stopped, in which order, before its partial result is taken."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from agent.testbed.sigdefer import DeferredSignals


def cut_short(agents, faults, sources: Sequence[str],
              partial: Callable[[], Optional[object]],
              on_result: Optional[Callable[[object], None]]) -> None:
    """A rate cut short: its faults undone (``faults``, a ``FaultRunner``), its sources
    stopped (``agents``, a ``LocalAgents``), then its partial result (``partial()``) handed
    to ``on_result``.

    Sources stop first, while the workers still answer (stopped together, a source waits out
    its result timeouts for tasks no worker will finish); their stop records the tasks they
    still held (answered, or lost), so the partial result is taken after it: taken before,
    a task still in flight would count as lost. A second Ctrl-C during their drain kills
    them (``LocalAgents.stop``); the partial result is kept all the same.
    """
    with DeferredSignals():
        try:
            faults.finish(agents_ready_s=0.0)
        except Exception:  # noqa: BLE001 - the network is removed whole right after
            pass
    try:
        agents.stop(sources)
    finally:
        with DeferredSignals():  # Ctrl-C pressed twice (or held) must not lose it
            res = partial()
            if res is not None and on_result is not None:
                on_result(res)
