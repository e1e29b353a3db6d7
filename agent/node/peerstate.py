"""What a node keeps of its neighbours' heartbeats (``NodeView.peer_state``), once checked.

A HEARTBEAT (and MDI-Exit's QUEUE_STATE) carries the sender's role, stage, capacity, queues,
service time and, in a heartbeat, ``no_route``: the first stage it cannot reach. Policies and
the route check read them as the sender says, so a claim its config rules out is refused
(counted ``drop_bad_heartbeat``) instead of kept. A heartbeat's ``policy`` and
``dtoee_timing``, what every node of a fleet must share, are compared with this node's
(``agent.node.fleetcheck``), and kept in the state like the rest.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from agent.config.checks import MAX_INTERVAL_S, MAX_QUEUE_TASKS
from agent.node.fleetcheck import FleetCheck
from agent.protocol.wire import Kind

_QUEUES = ("input_queue", "output_queue")


def take_heartbeat(view: Any, msg: Any, peer: Any, fleet: Optional[FleetCheck] = None
                   ) -> Tuple[str, bool]:
    """Keep ``msg``'s fields (a HEARTBEAT or QUEUE_STATE of ``peer``) in ``view.peer_state``:
    (why it is refused, "" when kept; whether the peer's ``no_route`` changed). A kept
    HEARTBEAT's policy and DTO-EE timing are compared with this node's by ``fleet``: a
    difference is counted and logged there, never a reason to refuse the heartbeat (the
    neighbour is alive all the same)."""
    why = heartbeat_problem(msg.fields, peer, view.num_stages)
    if why:
        return why, False
    if fleet is not None and msg.kind == Kind.HEARTBEAT:
        fleet.check(msg.sender, msg.fields)
    state = view.peer_state.setdefault(msg.sender, {})
    before = state.get("no_route", 0)
    state.update(msg.fields)  # QUEUE_STATE has no no_route: the last heartbeat's holds
    if msg.kind == Kind.HEARTBEAT:
        state["no_route"] = msg.fields.get("no_route", 0)
    return "", state.get("no_route", 0) != before


def heartbeat_problem(fields: Dict[str, Any], peer: Any, num_stages: int) -> str:
    """Why a HEARTBEAT or QUEUE_STATE of ``peer`` (its ``config.node.Peer``) cannot be true of
    it ("" when it can): another stage or role than its config's, a negative capacity, a
    queue outside [0, MAX_QUEUE_TASKS] (no node holds more), a service time outside [0,
    MAX_INTERVAL_S] (every timeout of a config is at most that), or a ``no_route`` that is no
    stage after its own (1..``num_stages``). Taken, one such claim made its neighbours refuse
    tasks for a stage that does not exist, and a queue of 2^53 tasks steered MDI-Exit's
    routing and admission."""
    first, last = peer.stages
    if fields.get("stage") != first or fields.get("role") != ("source" if first == 0 else
                                                              "worker"):
        return "it claims to be a %s of stage %r; its config says stage %d" % (
            fields.get("role"), fields.get("stage"), first)
    if not fields.get("capacity_flops", 0.0) >= 0:
        return "capacity_flops %r < 0" % fields.get("capacity_flops")
    for name in _QUEUES:
        if not 0 <= fields.get(name, 0) <= MAX_QUEUE_TASKS:
            return "%s %r outside [0, %d] (tasks a node can hold)" % (name, fields[name],
                                                                       MAX_QUEUE_TASKS)
    if not 0.0 <= fields.get("service_time_s", 0.0) <= MAX_INTERVAL_S:
        return "service_time_s %r outside [0, %g] s" % (fields["service_time_s"], MAX_INTERVAL_S)
    no_route = fields.get("no_route", 0)
    if no_route and not last < no_route <= num_stages:
        return "no_route %d is no stage after its own (%d..%d)" % (no_route, last + 1,
                                                                   num_stages)
    return ""
