"""What every node of one fleet must share, told in heartbeats and compared on receipt.

A fleet runs one policy: each policy drops the other's control messages without a word, so a
node restarted on another policy (midway through a re-render) took no part in its neighbours'
DTO-EE configuration phases, which ended cut short, and nothing said why. A DTO-EE fleet also
needs one ``slot_length_s`` (slots are aligned to the wall clock by it), ``rounds_per_slot``
and ``round_interval_s`` (a configuration phase's rounds and its length) on every node, and
one routing ``step`` (``policy_knobs.step``): a ``joint`` node waits out ``round_interval_s``
every round for the stage reports its ``default`` or ``paper`` siblings never send.

So each HEARTBEAT carries the sender's ``policy`` and, when that is ``dtoee``, its
``dtoee_timing`` ``[slot_length_s, rounds_per_slot, round_interval_s, step]`` (about 55 bytes
a heartbeat in all). A receiver compares them with its own config. A difference does not cost
the heartbeat (liveness and queue state are as true as ever): it is counted per heartbeat
(``fleet_mismatch_policy``, ``fleet_mismatch_dtoee_timing``) and logged at WARNING with the fix,
the first time at once for each peer and field, then at most once per
``MISMATCH_LOG_INTERVAL_S`` while it lasts; when the peer agrees again, one INFO line says so.
A heartbeat without these fields (an agent of an earlier version) is not compared; a
``dtoee_timing`` of three items (an earlier agent, before ``step``) is compared on those three,
and a fourth item that names no step rule this agent knows (a later version's) is not compared.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.ops.throttle import Throttle, more_since
from agent.policies.dtoee.knobs import STEP_RULES, parse_agent_knobs

log = logging.getLogger("agent.node.loop")  # the loop's step: logged under its name

DTOEE = "dtoee"  # the policy whose slot settings every node must share
TIMING = ("slot_length_s", "rounds_per_slot", "round_interval_s")  # dtoee_timing's numbers
STEP = "step"  # dtoee_timing's 4th item: the routing-update rule (DtoeeParams.step)
# a mismatch lasts until someone re-renders and restarts: one line an hour keeps it in sight
MISMATCH_LOG_INTERVAL_S = 3600.0
_MAX_SHOWN = 40  # characters of a peer's text shown in a line (it is the peer's word, unchecked)


def own_fields(cfg: Any) -> Dict[str, Any]:
    """The HEARTBEAT fields naming what ``cfg`` (a ``NodeConfig``) shares with its fleet."""
    out: Dict[str, Any] = {"policy": cfg.policy}
    if cfg.policy == DTOEE:
        # the step DtoeePolicy runs, read by its own reader: an unset knob is its default (as
        # is a config without policy_knobs, which a NodeConfig always has)
        step = parse_agent_knobs(getattr(cfg, "policy_knobs", None) or {}).step
        out["dtoee_timing"] = [float(cfg.slot_length_s), int(cfg.rounds_per_slot),
                               float(cfg.round_interval_s), step]
    return out


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if not text.isprintable() or len(text) > _MAX_SHOWN:
        text = repr(text[:_MAX_SHOWN]) + ("..." if len(text) > _MAX_SHOWN else "")
    return text


def _timing(value: Any) -> Optional[Tuple[float, ...]]:
    """The first three items of a ``dtoee_timing`` as numbers (the fourth, ``step``, is
    ``_step``'s; later ones, a later version's settings, are not compared); None when they are
    not finite numbers."""
    if not isinstance(value, list) or len(value) < len(TIMING):
        return None
    items = value[:len(TIMING)]
    if not all(type(v) in (int, float) and math.isfinite(v) for v in items):
        return None
    return tuple(float(v) for v in items)


def _step(value: List[Any]) -> Optional[str]:
    """The ``step`` of a ``dtoee_timing`` (its 4th item); None when it has none (an earlier
    agent's three items) or names no rule this agent knows (a later version's item)."""
    step = value[len(TIMING)] if len(value) > len(TIMING) else None
    return step if isinstance(step, str) and step in STEP_RULES else None


def mismatches(peer: str, own: Dict[str, Any], fields: Dict[str, Any]) -> Dict[str, str]:
    """For each field compared between ``own`` (``own_fields``) and a HEARTBEAT's ``fields``
    from ``peer``: "" when it agrees, else one line saying what differs and what to do. A
    field the heartbeat lacks is not compared; ``dtoee_timing`` only when both run dtoee."""
    out: Dict[str, str] = {}
    theirs = fields.get("policy")
    if theirs is None:
        return out
    out["policy"] = "" if theirs == own["policy"] else (
        "%s runs %s, this node %s: a fleet runs one policy (each drops the other's control "
        "messages); render every node with one --policy and restart them all"
        % (peer, _shown(theirs), own["policy"]))
    if out["policy"]:
        return out
    if "dtoee_timing" not in own or "dtoee_timing" not in fields:
        return out
    got = _timing(fields["dtoee_timing"])
    if got is None:
        out["dtoee_timing"] = ("%s sends dtoee_timing %s, not [%s] as numbers: an agent this one "
                               "cannot compare with; run one edge-agent version in the fleet"
                               % (peer, _shown(fields["dtoee_timing"]), ", ".join(TIMING)))
        return out
    differ = ["%s %g, this node %g" % (name, g, o) for name, g, o
              in zip(TIMING, got, own["dtoee_timing"]) if g != o]
    shared, why, how = ", ".join(TIMING), "", ""
    step, mine = _step(fields["dtoee_timing"]), own["dtoee_timing"][len(TIMING)]
    if step is not None and step != mine:
        differ.append("%s %s, this node %s" % (STEP, step, mine))
        shared += ", " + STEP
        why = ", and a joint node waits every round for its stage siblings' reports"
        how = ", knobs.dtoee.step alike"
    out["dtoee_timing"] = "" if not differ else (
        "%s has %s: every node of a DTO-EE fleet needs the same %s (slots and configuration "
        "phases line up across nodes by them%s); set them alike in every node's config (one "
        "fleet render%s) and restart the nodes that differ"
        % (peer, "; ".join(differ), shared, why, how))
    return out


class FleetCheck:
    """This node's side of the comparison: ``fields`` to put in its own heartbeats, ``check``
    for each neighbour's (module docstring)."""

    def __init__(self, cfg: Any, count: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.fields = own_fields(cfg)
        self.role, self.stage = cfg.role, cfg.stage
        self._count = count  # the node's counters (``Outbox.count``)
        self.clock = clock
        # (peer, field) -> its log throttle, while that peer differs; configured peers only
        self._open: Dict[Tuple[str, str], Throttle] = {}

    def heartbeat(self, view: Any) -> Dict[str, Any]:
        """This node's HEARTBEAT fields: role, stage, ``view``'s capacity, queue state and
        route, and what it shares with its fleet (``fields``)."""
        return dict({"role": self.role, "stage": self.stage,
                     "capacity_flops": view.capacity_flops,
                     "input_queue": view.input_queue, "output_queue": view.output_queue,
                     "service_time_s": view.service_time_s, "no_route": view.no_route},
                    **self.fields)

    def check(self, peer: str, fields: Dict[str, Any]) -> List[str]:
        """Compare a HEARTBEAT of ``peer`` (already kept): count and log what differs, say
        when it agrees again; the fields that differ."""
        differ = []
        for name, line in mismatches(peer, self.fields, fields).items():
            key = (peer, name)
            if not line:
                if self._open.pop(key, None) is not None:
                    log.info("%s now %s, as this node does", peer, "runs %s" % fields["policy"]
                             if name == "policy" else "has the same %s" % ", ".join(TIMING + (STEP,)))
                continue
            differ.append(name)
            self._count("fleet_mismatch_" + name)
            throttle = self._open.get(key)
            if throttle is None:
                self._open[key] = throttle = Throttle(MISMATCH_LOG_INTERVAL_S, self.clock)
            left = throttle.due()
            if left is not None:
                log.warning("%s%s", line, more_since(left, "more such heartbeats"))
        return differ
