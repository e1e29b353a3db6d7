"""``fixed``'s one knob, ``routing``: the weights a node splits its tasks by, in two forms.

- **A node's row**, ``routing = {successor = weight >= 0}``: a node config's own table (the
  node's successors only; a successor left out weighs 0; no table: uniform).
- **Per node**, ``routing = {node = {successor = weight >= 0}}``: a topology's form. A topology
  gives every node the same ``knobs.fixed`` table, and each node's successors differ, so one
  flat row fitted no topology (a last-stage worker, with no successors, refused any row). Each
  node takes its own row (``own_row``); a node without one routes uniformly. ``fleet render``
  writes each device its own row (``node_knobs``); the testbed's agents get the whole table and
  pick their row, so a node config may hold this form too.

A topology's flat row is refused when the file is read (``check_topology_form``), pointing at
the per-node form, rather than applied to the nodes whose successors it names: those nodes
would be a guess when stages share names only in part, and a misspelt name would leave a node
routing uniformly without a word (the fault ``fixed`` refuses at start-up). A topology's rows
are checked against its links before a run or a render (``check_topology_rows``).

The object ``parse_fixed_knobs`` returns is the ``routing`` table as floats, in its form.
``FixedWeightsPolicy`` (``agent.policies.fixed_agent``, an ``AgentPolicy``) is built on these. Pure: no
I/O.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence, Type

from agent.config.fields import Fields
from agent.errors import UsageError

POLICY_NAME = "fixed"
SHAPE = "must be a table {peer = weight >= 0}, or one per node {node = {peer = weight >= 0}}"


def _weight(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def parse_fixed_knobs(knobs: Mapping[str, Any], where: str = "policy_knobs",
                      error: Type[Exception] = UsageError) -> Dict[str, Any]:
    """``fixed``'s one knob, ``routing`` (module docstring), as floats in its form: a row
    ``{peer: weight}`` or ``{node: {peer: weight}}``; any other key, a negative or non-number
    weight, or the two forms mixed is an error naming ``where.routing``."""
    f = Fields(knobs, where, error)
    f.reject_unknown(("routing",))
    routing = knobs.get("routing", {})
    if not isinstance(routing, Mapping):
        raise f.fail("routing", SHAPE)
    values = list(routing.values())
    if all(_weight(v) for v in values):
        return {str(k): float(v) for k, v in routing.items()}
    if all(isinstance(v, Mapping) and all(_weight(w) for w in v.values()) for v in values):
        return {str(n): {str(k): float(w) for k, w in row.items()} for n, row in routing.items()}
    raise f.fail("routing", SHAPE)


def per_node(routing: Mapping[str, Any]) -> bool:
    """True for the per-node form ``{node: {peer: weight}}`` (an empty table is a row)."""
    return any(isinstance(v, Mapping) for v in routing.values())


def own_row(routing: Mapping[str, Any], node_id: str) -> Dict[str, float]:
    """The weights node ``node_id`` routes by: the row itself, or its row of a per-node table
    ({} when it has none: uniform)."""
    if per_node(routing):
        return dict(routing.get(node_id, {}))
    return dict(routing)


def row_problem(row: Mapping[str, float], successors: Sequence[str], who: str) -> str:
    """What is wrong with ``row`` for a node (``who``: "this node" or its id) whose successors
    are ``successors``, "" when nothing: a weight for a node that is no successor there, which
    misspelt had left every successor weighing 0 (uniform routing) while stats showed it."""
    unknown = sorted(set(row) - set(successors))
    if not unknown:
        return ""
    return "%s %s no successor of %s (its successors: %s)" % (
        ", ".join(unknown), "is" if len(unknown) == 1 else "are", who,
        ", ".join(successors) or "none")


def check_own_row(routing: Mapping[str, Any], node_id: str, successors: Sequence[str],
                  where: str = "policy_knobs", error: Type[Exception] = UsageError) -> None:
    """Raise ``error`` naming ``where.routing`` (``where.routing.NODE`` for a per-node table)
    when node ``node_id``'s row weighs a node that is none of its ``successors``."""
    problem = row_problem(own_row(routing, node_id), successors, "this node")
    if problem:
        key = "routing." + node_id if per_node(routing) else "routing"
        raise error("%s.%s: %s" % (where, key, problem))


def check_topology_form(knobs: Mapping[str, Any], where: str,
                        error: Type[Exception] = UsageError) -> None:
    """A topology's ``knobs.fixed`` (``where``), read when the file is read: its ``routing``
    must be per node; a flat row is refused with the form to use (module docstring)."""
    routing = parse_fixed_knobs(knobs, where, error)
    if routing and not per_node(routing):
        first = sorted(routing)[:2]
        raise error("%s.routing: a topology gives each node its own row, {node: {successor: "
                    "weight}}, e.g. {\"NODE\": {%s}} for the node(s) sending to %s; a flat "
                    "{successor: weight} is one node config's form"
                    % (where, ", ".join('"%s": %g' % (k, routing[k]) for k in first),
                       ", ".join(first)))


def check_topology_rows(knobs: Mapping[str, Any], successors_of: Mapping[str, Sequence[str]],
                        where: str, error: Type[Exception] = UsageError) -> None:
    """A topology's per-node ``routing`` against its nodes (``successors_of``: every node's
    successors, in link order): each row's key a node, each weight a successor of it; errors
    name ``where.routing.NODE``."""
    routing = parse_fixed_knobs(knobs, where, error)
    if not per_node(routing):
        return  # a flat row: refused when the file was read (check_topology_form)
    for node in sorted(routing):
        if node not in successors_of:
            raise error("%s.routing.%s: no such node in the topology (nodes that send on: %s)"
                        % (where, node, ", ".join(n for n, s in successors_of.items() if s)
                           or "none"))
        problem = row_problem(routing[node], successors_of[node], node)
        if problem:
            raise error("%s.routing.%s: %s" % (where, node, problem))


def node_knobs(policy: str, knobs: Mapping[str, Any], node_id: str) -> Dict[str, Any]:
    """The ``policy_knobs`` one node's config gets from a topology's table of ``policy``: for
    ``fixed``, its own row of a per-node ``routing`` (no row: none, so uniform); any other
    policy's table as it is."""
    out = dict(knobs)
    if policy != POLICY_NAME or not isinstance(out.get("routing"), Mapping) \
            or not per_node(out["routing"]):
        return out
    row = out.pop("routing").get(node_id)
    if row:
        out["routing"] = dict(row)
    return out
