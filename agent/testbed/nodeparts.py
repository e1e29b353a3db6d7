"""A topology's node-config parts, read as each agent's config reads them, when the file is read.

A topology gives every agent the same ``policy_knobs`` of a policy (its ``knobs`` table) and the
same extra node-config fields (its ``agent`` table). Read only in the agents' configs, a wrong
value was named as one node's field (``testbed node cam1.status_interval_s``, not the file),
and a knob table of a policy the run did not name was never read at all. ``check_knob_table``
and ``check_agent_table`` (both: ``check_node_parts``) read them with the node config's own rules, raising the caller's
error (``Fields.error``) that names the key path in the topology (``knobs.dtoee.step``,
``agent.status_interval_s``). ``check_fixed_rows`` checks ``fixed``'s per-node routing rows
against the topology's links, and ``agent_start_error`` says what an agent's start-up refused
at the topology's field, with the agent. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Mapping, Sequence

from agent.config.fields import Fields
from agent.config.checks import MAX_INTERVAL_S
from agent.config.node import ConfigError, NodeConfig, parse_config
from agent.errors import UsageError
from agent.policies.fixed import POLICY_NAME as FIXED, check_topology_form, check_topology_rows
from agent.policies.registry import check_agent_knobs


def check_node_parts(knobs: Fields, agent: Fields, per_agent: Sequence[str]) -> None:
    """A topology's ``knobs`` (``{policy: {knob: value}}``, names already checked) and its
    ``agent`` table, each as every agent's config reads it (``check_knob_table``,
    ``check_agent_table``); errors are ``knobs.error`` and ``agent.error``."""
    for policy in knobs.obj:
        check_knob_table(policy, knobs.table(policy))
    check_agent_table(agent, per_agent)


def check_knob_table(policy: str, table: Fields) -> None:
    """``table`` as policy ``policy``'s ``policy_knobs`` in a node config: unknown keys and bad
    values raise ``table.error`` (whatever class the policy's parser raises) naming
    ``table.where.key``; ``fixed``'s ``routing`` must be per node (``agent.policies.fixed``)."""
    try:
        check_agent_knobs(policy, table.obj, table.where, table.error)
        if policy == FIXED:  # one table for every node: per node, each taking its own row
            check_topology_form(table.obj, table.where, table.error)
    except table.error:
        raise
    except UsageError as exc:  # the policy's own error class
        raise table.error(str(exc)) from None


# what a probe config gives the fields the shared table cannot hold (each is set per agent):
# a source with one stage-1 peer, and a slot long enough for any configuration phase (the
# testbed checks the phase against the topology's slot_s, in its own words)
_PROBE = {"node_id": "probe", "role": "source", "stage": 0, "bundle": "/probe",
          "state_dir": "/probe", "control_bind": "inproc://c", "data_bind": "inproc://d",
          "peers": [{"id": "w", "stage": 1, "control_address": "inproc://wc",
                     "data_address": "inproc://wd", "public_key": "w" * 40}],
          "slot_length_s": MAX_INTERVAL_S}
# key paths a table may leave out when it asks for security = "curve": a rendered fleet sets
# its own (the testbed's local agents have none, which their configs refuse)
_CURVE_PATHS = {"secret_key_path": "/probe.key_secret", "public_key_path": "/probe.key"}


def check_agent_table(table: Fields, per_agent: Sequence[str]) -> None:
    """``table``, node-config fields every agent gets (those in ``per_agent``, set for each
    agent, already refused): an unknown field, a bad value or one out of range raises
    ``table.error`` naming ``table.where.key``, as a node config names its own. Read in a
    probe config (``_PROBE``); what depends on the agent it goes to is left to its config."""
    table.reject_unknown(f.name for f in fields(NodeConfig) if f.name not in per_agent)
    probe = dict(_CURVE_PATHS)
    probe.update(table.obj)
    probe.update(_PROBE)
    try:
        parse_config(probe, "/", where=table.where)
    except ConfigError as exc:
        raise table.error(str(exc)) from None


def node_config_error(topo: Any, exc: Exception, where: str, obj: Mapping[str, Any],
                      policy: str) -> Exception:
    """``exc``, an error of the node config ``obj`` parsed as ``where``, said at the field of
    the topology file (``topo``, a ``Topology``) its value came from when it came from one:
    ``FILE: agent.KEY: ... (where)`` or ``FILE: knobs.POLICY.KEY: ... (where)``; else ``exc``
    as it is."""
    text = str(exc)
    if not text.startswith(where + "."):
        return exc
    rest = text[len(where) + 1:]
    key = re.match(r"\w*", rest).group(0)  # type: ignore[union-attr]
    if key == "policy_knobs" and obj.get(key) == topo.knobs.get(policy, {}):
        origin = "knobs." + policy
    elif key in topo.agent and obj.get(key) == topo.agent[key]:  # not one the caller set
        origin = "agent." + key
    else:
        return exc
    return topo.error("%s%s (%s)" % (origin, rest[len(key):], where))


def check_fixed_rows(topo: Any) -> None:
    """The topology ``topo``'s ``knobs.fixed.routing`` rows against its links, before a run or a
    render: each row's key a node, each weight a successor of it (``FILE:
    knobs.fixed.routing.w1a: w3a is no successor of w1a (its successors: w2a, w2b)``)."""
    knobs = topo.knobs.get(FIXED)
    if isinstance(knobs, Mapping):
        check_topology_rows(knobs, {n: [l.dst for l in topo.successors(n)]
                                    for n in topo.node_ids()}, "knobs." + FIXED, topo.error)


# node-config fields a topology worker's own fields set (``workers[i].KEY``)
_WORKER_KEYS = ("last_stage", "terminal")


def agent_start_error(topo: Any, exc: Exception, node: str, policy: str) -> Exception:
    """``exc``, what agent ``node``'s start-up (its config checked against the bundle, its
    policy made and configured) refused, said in the topology file ``topo`` at the field its
    value came from, with the agent: ``FILE: knobs.POLICY.KEY: ... (testbed node N)`` for
    ``policy_knobs.KEY``, ``workers[i].KEY`` for the worker's own ``last_stage`` or
    ``terminal``, ``agent.KEY`` for a field of the topology's ``agent`` table, else ``FILE:
    <the agent's words> (testbed node N)``."""
    text = str(exc)
    key = re.match(r"\w*", text).group(0)  # type: ignore[union-attr]
    rest = text[len(key):]
    workers = [w.id for w in topo.workers]
    if key and rest[:1] in (".", ":"):  # the agent's words name a node-config field
        if key == "policy_knobs":
            text = "knobs.%s%s" % (policy, rest)
        elif key in _WORKER_KEYS and node in workers:
            text = "workers[%d].%s%s" % (workers.index(node), key, rest)
        elif key in topo.agent:
            text = "agent." + text
    return topo.error("%s (testbed node %s)" % (text, node))
