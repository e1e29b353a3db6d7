"""The topology a testbed run used, kept in its run folder so ``report`` needs nothing else.

``testbed --topology topo.json`` names its file relative to the folder it ran in, and that file
may change or vanish later; ``report`` run elsewhere, or after an edit, would redo the summaries
on another warm-up or another set of agents. So the testbed writes ``RUN/topology.json``: the
topology object it parsed, with what pointed outside the file made absolute (``bundle``,
``fleet.keys_dir``) and the knobs it ran with (``<name>-noee``, ``--mdi-mode``), before
``testbed.json``; both atomically. ``run_topology`` reads that copy back. A run folder from
before the copy existed falls back to the name in ``testbed.json``: a shipped topology by its
name, else the file looked up from the run folder upwards and then in the current folder, with
a note saying which file was read.

``link_lines`` says what the run does with the topology's links: its ``emulated:`` summary
counts the rates really applied (on loopback the senders pace at the rate their configs give
a link, ``config_rate_bytes_s`` when set; under netns a link between agents of one device runs
over its loopback, unshaped), and the ``network:`` lines name the links whose fields the
network mode leaves out.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.testbed.rundir import RUN_INFO
from agent.testbed.topology import (Topology, TopologyError, load_topology, parse_topology,
                                    shipped_base)

TOPOLOGY_COPY = "topology.json"  # in the run folder, next to testbed.json


class CopyError(UsageError):
    """The run folder's topology copy is damaged; the message names it."""


def topology_copy(topo: Topology) -> dict:
    """The JSON object of ``topo`` as a run folder keeps it: parsing it anywhere gives ``topo``
    again (its ``path`` aside)."""
    obj = dict(topo.document)
    if topo.bundle != "demo":  # a relative bundle path was relative to the original file
        obj["bundle"] = os.path.abspath(topo.bundle)
    if "agent" in obj:  # its paths were relative to the original file too: made absolute
        obj["agent"] = dict(topo.agent)
    if topo.knobs or "knobs" in obj:
        obj["knobs"] = {policy: dict(knobs) for policy, knobs in topo.knobs.items()}
    fleet = obj.get("fleet")
    keys = fleet.get("keys_dir") if isinstance(fleet, dict) else None
    if isinstance(keys, str) and keys and topo.path:  # relative to the original file too
        obj["fleet"] = dict(fleet, keys_dir=os.path.join(
            os.path.dirname(os.path.abspath(topo.path)), keys))
    return obj


def write_run_info(run_dir: str, info: dict, topo: Topology) -> None:
    """Write ``RUN/topology.json`` (the topology the run uses) and then ``RUN/testbed.json``
    (``info``: how the run was asked for), each atomically: a ``testbed.json`` is never without
    its copy."""
    write_atomic(os.path.join(run_dir, TOPOLOGY_COPY),
                 json.dumps(topology_copy(topo), indent=1) + "\n")
    write_atomic(os.path.join(run_dir, RUN_INFO), json.dumps(info, indent=1) + "\n")


def run_topology(run_dir: str, recorded: Optional[str]) -> Tuple[Topology, Optional[str]]:
    """The topology of a run folder and a note (None, or which file an older run's topology
    was read from). ``recorded`` is ``testbed.json``'s ``topology``; ``CopyError`` for a damaged
    copy, ``UsageError`` when an older run's topology cannot be read."""
    copy = os.path.join(run_dir, TOPOLOGY_COPY)
    if os.path.lexists(copy):
        try:
            return parse_topology(read_json_file(copy, TopologyError, "topology"), run_dir,
                                  copy), None
        except UsageError as exc:
            raise CopyError(str(exc) if copy in str(exc) else "%s: %s" % (copy, exc)) from None
    if not recorded or shipped_base(recorded) is not None:  # it ships with the code: no file of the run's
        return load_topology(recorded), None
    path = _older_file(run_dir, recorded)
    if path is None:
        if os.sep not in recorded and not recorded.endswith(".json"):
            return load_topology(recorded), None  # its own error: no file, no shipped name
        raise UsageError("%s: no such topology file (this run folder has no %s; looked for it "
                         "%s)" % (recorded, TOPOLOGY_COPY, "as given" if os.path.isabs(recorded)
                                  else "in the run folder, the folders above it and the "
                                  "current folder"))
    note = ("%s: this run folder has no %s (a run from before the testbed kept one): the "
            "topology was read from %s, which may have changed since the run"
            % (os.path.join(run_dir, RUN_INFO), TOPOLOGY_COPY, path))
    return load_topology(path), note


def _older_file(run_dir: str, recorded: str) -> Optional[str]:
    """The topology file an older run folder names (None: not found): an absolute path as is;
    a relative one (it was relative to the folder the testbed ran in, which no file records)
    first in the run folder and the folders above it, then in the current folder."""
    if os.path.isabs(recorded):
        tried = [recorded]
    else:
        tried, d = [], os.path.abspath(run_dir)
        while True:
            tried.append(os.path.join(d, recorded))
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
        tried.append(os.path.abspath(recorded))
    return next((path for path in tried if os.path.isfile(path)), None)


def link_lines(topo: Topology, plan=None) -> Tuple[str, List[str]]:
    """(the ``emulated:`` summary, the ``network:`` lines) of a run on loopback (``plan``
    None) or on a netns ``plan``: both say what the links really carry."""
    from agent.testbed.fleet import emulation_line
    from agent.testbed.asrun import applied_links, one_device_links

    emulated = emulation_line(applied_links(topo, plan), "shaped in the kernel" if plan
                              else "emulated")
    lines = []
    if plan is None:
        told = [l for l in topo.links if topo.fleet is None and l.rate_bytes_s is not None
                and l.config_rate_bytes_s not in (None, l.rate_bytes_s)]
        if told:
            lines.append("network: loopback; the senders pace these links at the "
                          "config_rate_bytes_s their agents are told, not at their rate_bytes_s "
                          "(applied with --network netns only): %s" % ", ".join(
                              "%s->%s %g bytes/s (not %g)" % (l.src, l.dst,
                                                              l.config_rate_bytes_s,
                                                              l.rate_bytes_s) for l in told))
        if any(l.delay_ms or l.loss for l in topo.links):
            lines.append("network: loopback; the links' delay_ms and loss apply with --network "
                         "netns only")
        return emulated, lines
    lines.append("network: netns, %d devices (namespaces %s-*), %d directed links shaped in the "
                 "kernel" % (len(plan.devices), plan.prefix, len(plan.shaped)))
    inside = [l for l in one_device_links(topo, plan)
              if l.rate_bytes_s is not None or l.delay_ms or l.loss]
    if inside:
        lines.append("network: not shaped (agents of one device talk over its loopback): %s"
                     % ", ".join("%s->%s (host %s)" % (l.src, l.dst, topo.host_of(l.src))
                                 for l in inside))
    if any(s.delay_ms for s in plan.shaped):
        lines.append("link delay: %s" % ("sch_netem" if plan.delay_line == "netem" else
                                         "NFQUEUE shim (this kernel has no sch_netem)"))
    return emulated, lines
