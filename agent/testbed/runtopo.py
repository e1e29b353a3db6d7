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

``node_config_error`` says an agent's config error of a value the topology gave (its ``agent``
table, its knobs) at that field of the topology file; ``settings_warning`` says how the
topologies two runs used differ, by their copies' contents (``report``'s side by side).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.policies.mdi_exit.rules import POLICY_NAME as MDI_EXIT
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
                                  copy, strict=False), None
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


MAX_NAMED_FIELDS = 5  # fields a warning names of two topologies that differ; the rest counted


def settings_warning(runs: Sequence[Any]) -> str:
    """What ``report`` warns of runs (``PastRun``s: ``path``, ``label``, ``info``) compared
    side by side when they did not run one setting, "" when they did. Each run unlike the
    first is named with what differs: its mdi mode, and the topology it ran, compared by the
    content of the run folders' copies (defaults and ``comment`` fields aside, whatever the
    files were named) with the fields that differ; by the names in ``testbed.json`` when a run
    folder has no copy (an older run)."""
    labels = [run.label for run in runs]
    if len(set(labels)) < len(labels):  # runs of one name in two --out folders
        labels = [os.path.relpath(run.path) for run in runs]
    first = _setting(runs[0])
    unlike = []
    for label, run in zip(labels[1:], runs[1:]):
        what = _unlike(first, _setting(run))
        if what:
            unlike.append("%s vs %s: %s" % (label, labels[0], what))
    if not unlike:
        return ""
    return ("the runs differ in topology or mdi mode (%s): side by side compares unlike "
            "settings" % "; ".join(unlike))


def _setting(run: Any) -> Tuple[Any, Any, Optional[Topology]]:
    """(topology name, mdi mode, topology its copy holds or None) of one run."""
    copy = os.path.join(run.path, TOPOLOGY_COPY)
    topo = None
    if os.path.isfile(copy):
        try:
            topo = parse_topology(read_json_file(copy, TopologyError, "topology"), run.path,
                                  "", strict=False)
        except UsageError:  # reading the run refused a damaged copy already: by name then
            pass
    return run.info.get("topology"), run.info.get("mdi_mode"), topo


def _unlike(a: Tuple[Any, Any, Optional[Topology]], b: Tuple[Any, Any, Optional[Topology]]
            ) -> str:
    """What setting ``b`` runs unlike ``a`` ("" when nothing)."""
    out = []
    if a[1] != b[1]:
        out.append("mdi mode %s (not %s)" % (b[1] or "none", a[1] or "none"))
    if a[2] is None or b[2] is None:  # an older run folder: its topology by name
        if a[0] != b[0]:
            out.append("topology %s (not %s)" % (b[0], a[0]))
    else:
        # two modes: their mdi-exit knobs differ by the modes, said as the modes
        ta, tb = (t if a[1] == b[1] else dataclasses.replace(t, knobs={
            k: v for k, v in t.knobs.items() if k != MDI_EXIT}) for t in (a[2], b[2]))
        if ta == tb:
            return " and ".join(out)
        named = _differences(_plain(topology_copy(ta)), _plain(topology_copy(tb))) or [
            f.name for f in dataclasses.fields(Topology) if f.compare
            and getattr(ta, f.name) != getattr(tb, f.name)]
        more = len(named) - MAX_NAMED_FIELDS
        out.append("topology %s, differing in %s%s" % (
            "%s (not %s)" % (b[0], a[0]) if b[0] != a[0] else "%s edited between them" % b[0],
            ", ".join(named[:MAX_NAMED_FIELDS]), " and %d more" % more if more > 0 else ""))
    return " and ".join(out)


def _plain(obj: Any) -> Any:
    """A decoded topology without its ``comment`` fields (they change nothing a run does)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items() if k != "comment"}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


_ABSENT = object()


def _differences(a: Any, b: Any, where: str = "") -> List[str]:
    """The key paths (``knobs.dtoee.step``, ``links[2].rate_bytes_s``) where two decoded
    topologies differ: into objects by key and into lists of one length by index."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [p for k in sorted(set(a) | set(b), key=str) for p in _differences(
            a.get(k, _ABSENT), b.get(k, _ABSENT), "%s.%s" % (where, k) if where else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b))
                for p in _differences(x, y, "%s[%d]" % (where, i))]
    return [] if a == b and type(a) is type(b) or _same_number(a, b) else [where or "(all)"]


def _same_number(a: Any, b: Any) -> bool:
    """2 and 2.0 are one value in a topology (bools are not numbers there)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)) \
        and a == b


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
