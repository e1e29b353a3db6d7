"""``edge-agent testbed --mdi-mode``: the MDI-Exit paper's scenarios as knobs of a topology.

Each mode sets the ``mdi-exit`` knobs of its scenario (admission: Alg. 3 at the sources, fixed
thresholds; adapt: Alg. 4's threshold adaptation; fixed: neither). A topology that does not set
``agent.max_queue_tasks`` gets at least what MDI-Exit's queue rules need
(``agent.policies.mdi_exit.agent.queue_room``: 80 with the paper's T_Q2 = 30 and T_O = 50, as
the mdi-* presets set): with the node config's default (32 tasks) a worker refuses tasks before
I_n + O_n passes T_Q2 by more than two, and Alg. 4 (the adapt runs) would hardly ever act.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

MDI_MODES = {"admission": {"admission_control": True, "threshold_adaptation": False},
             "adapt": {"admission_control": False, "threshold_adaptation": True, "threshold": 0.9},
             "fixed": {"admission_control": False, "threshold_adaptation": False}}


def with_mdi_mode(topo: Any, mode: Optional[str]) -> Any:
    """The topology with the ``mdi-exit`` knobs of ``mode`` and, unless its ``agent`` sets
    ``max_queue_tasks``, room in every node's queues for MDI-Exit's rules (None: unchanged)."""
    if mode is None:
        return topo
    knobs = {k: dict(v) for k, v in topo.knobs.items()}
    knobs.setdefault("mdi-exit", {}).update(MDI_MODES[mode])
    agent = dict(topo.agent)
    if "max_queue_tasks" not in agent:
        need = queue_need(knobs["mdi-exit"])
        if need is not None:
            agent["max_queue_tasks"] = need
    return dataclasses.replace(topo, knobs=knobs, agent=agent)


def queue_need(knobs: Any) -> Optional[int]:
    """The ``max_queue_tasks`` MDI-Exit with ``knobs`` needs where that is above the node
    config's default; None otherwise, and for knobs it refuses (the topology's own check
    names them)."""
    from agent.config.node import NodeConfig
    from agent.policies.mdi_exit.agent import queue_room
    from agent.policies.mdi_exit.rules import MdiExitParamsError, params_from_knobs

    try:
        params = params_from_knobs(knobs)
    except MdiExitParamsError:
        return None
    need = queue_room(params)
    return need if need > int(NodeConfig.max_queue_tasks) else None
