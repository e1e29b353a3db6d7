"""How DTO-EE's configuration phases ended in each rate of a local testbed run, and a line under
the table when many were cut short.

Every DTO-EE agent counts how its phases ended (``agent.policies.dtoee.settle``): ``settled``
early, after ``all_rounds``, or ``cut_short`` (its time or the next slot came first: a
neighbour late or gone). The counts are saved in its ``state.json`` (``dtoee_phases``) with its
policy state and at its stop. After each rate the testbed reads them from every agent's state
directory (``PhaseTally``):

- a source runs as a new process for each rate, counting from 0 (the policy does not restore
  the counts), and saves them at its stop: its file holds that rate's phases;
- a worker serves every rate of the policy: its share of a rate is the difference from its
  reading after the rate before (a count lower than then: a new process after a fault, counted
  from 0; what the old one counted after its last save is lost). A worker saves its state after
  a phase (not after every one whose counts alone changed) and at its stop, so phases that
  ended after its last save count in the next rate's.

The totals go into the rate's result (``dtoee_phases`` in ``results.json``) and, with each
agent's counts, the agents that started in the rate and the phase timing, into
``POLICY/rate-R/dtoee_phases.json``, from which the testbed and ``edge-agent report`` print a
line per rate with ``CUT_SHORT_SHARE`` or more of its phases cut short (``cut_short_lines``).
An agent's first phase after its start is cut short as a rule (its neighbours are still
starting, or it joined mid-phase), so one phase per agent started in the rate is left out of
that share.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from agent.ops.atomic import write_atomic
from agent.ops.state import STATE_FILE
from agent.testbed.phases import phase_lines
from agent.testbed.rundir import rate_label

PHASES_FILE = "dtoee_phases.json"  # in each DTO-EE rate's folder (rundir.rate_label's name)
KINDS = ("settled", "all_rounds", "cut_short")  # the counters of Settle.ends
# a rate's share of phases cut short (each agent's first after its start left out) from which
# the testbed says so: a few late rounds on a loaded machine stay well below it
CUT_SHORT_SHARE = 0.2


def read_phase_counts(state_dir: str) -> Optional[Dict[str, int]]:
    """An agent's ``dtoee_phases`` from ``state_dir/state.json``; None when there is no such
    file or entry, or the entry is not a count for each of ``KINDS``."""
    try:
        with open(os.path.join(state_dir, STATE_FILE), "r", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    state = doc.get("state") if isinstance(doc, dict) else None
    got = state.get("dtoee_phases") if isinstance(state, dict) else None
    if not isinstance(got, dict) or not all(_count(got.get(k)) for k in KINDS):
        return None
    return {k: int(got[k]) for k in KINDS}


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def totals(nodes: Mapping[str, Mapping[str, int]]) -> Dict[str, int]:
    """The counts of every agent added up, per kind."""
    return {k: sum(int(c.get(k, 0)) for c in nodes.values()) for k in KINDS}


class PhaseTally:
    """The phase counts of one policy's local run, rate by rate (see the module docstring)."""

    def __init__(self) -> None:
        self._last: Dict[str, Dict[str, int]] = {}  # worker -> its reading after the last rate

    def rate_counts(self, cfgs: Mapping) -> Tuple[Dict[str, Dict[str, int]], int]:
        """Each agent's phases of the rate just finished (``cfgs``: node id -> ``NodeConfig``;
        agents without counts are left out) and how many of them started in it (a source,
        a worker's first reading, a worker counted anew)."""
        out = {}
        starts = 0
        for n, cfg in cfgs.items():
            now = read_phase_counts(cfg.state_dir)
            if now is None:
                continue
            if cfg.role == "source":
                out[n], starts = now, starts + 1
                continue
            last = self._last.get(n)
            restarted = last is None or any(now[k] < last[k] for k in KINDS)
            out[n] = dict(now) if restarted else {k: now[k] - last[k] for k in KINDS}
            starts += int(restarted)
            self._last[n] = now
        return out, starts

    def record(self, result, cfgs: Mapping, directory: str) -> None:
        """After a DTO-EE rate: its totals into ``result.dtoee_phases`` and
        ``directory/dtoee_phases.json``; nothing for another policy or without counts."""
        if result.policy != "dtoee":
            return
        nodes, starts = self.rate_counts(cfgs)
        if not nodes:
            return
        cfg = next(iter(cfgs.values()))
        result.dtoee_phases = totals(nodes)
        doc = {"policy": result.policy, "rate": result.rate, "dtoee_phases": result.dtoee_phases,
               "nodes": nodes, "started": starts, "agents": len(cfgs),
               "cpus": os.cpu_count() or 0, "round_interval_s": cfg.round_interval_s,
               "rounds_per_slot": cfg.rounds_per_slot, "slot_length_s": cfg.slot_length_s}
        os.makedirs(directory, exist_ok=True)
        write_atomic(os.path.join(directory, PHASES_FILE), json.dumps(doc, indent=1) + "\n")


def cut_short_line(doc: Mapping, faults: bool = False) -> Optional[str]:
    """The line for one rate's ``dtoee_phases.json`` content when ``CUT_SHORT_SHARE`` or more of
    its phases were cut short, one per agent started in the rate (``started``) left out of
    both counts (``faults``: the rate had faults, which take neighbours away); None
    otherwise."""
    counts = doc.get("dtoee_phases") or {}
    first = doc.get("started") if _count(doc.get("started")) else 0
    cut = max(0, counts.get("cut_short", 0) - first)
    total = sum(counts.get(k, 0) for k in KINDS) - (counts.get("cut_short", 0) - cut)
    if not total or cut < CUT_SHORT_SHARE * total:
        return None
    why = ("this rate's faults took neighbours away" if faults else
           "round_interval_s %g s x rounds_per_slot %s may be too short for %s agents on %s "
           "CPUs" % (doc.get("round_interval_s"), doc.get("rounds_per_slot"),
                     doc.get("agents"), doc.get("cpus")))
    return ("%s at %.1f tasks/s: %d of %d configuration phases cut short (a neighbour late or "
            "gone; each agent's first after its start left out): %s; see docs/cli.md (testbed)"
            % (doc.get("policy"), float(doc.get("rate")), cut, total, why))


def cut_short_lines(run_dir: str, results: Sequence) -> List[str]:
    """A line per DTO-EE result of the run folder ``run_dir`` with many phases cut short, from
    its rate's ``dtoee_phases.json`` (whose totals also fill the result's ``dtoee_phases``
    when it has none, as a re-summarised one); a line naming a damaged file."""
    out = []
    for r in results:
        path = os.path.join(run_dir, r.policy, rate_label(r.rate), PHASES_FILE)
        if r.policy != "dtoee" or not os.path.lexists(path):
            continue
        try:
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
            counts = doc["dtoee_phases"]
            if not all(_count(counts.get(k)) for k in KINDS):
                raise ValueError("dtoee_phases needs a count for each of %s" % ", ".join(KINDS))
            doc["rate"] = float(doc.get("rate", r.rate))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            out.append("%s at %.1f tasks/s: configuration phases not read: %s: %s"
                       % (r.policy, r.rate, path, exc))
            continue
        if not getattr(r, "dtoee_phases", None):
            r.dtoee_phases = {k: int(counts[k]) for k in KINDS}
        line = cut_short_line(doc, bool(r.faults))
        if line:
            out.append(line)
    return out


def lines_under_table(run_dir: str, results: Sequence) -> List[str]:
    """What the testbed and ``report`` print under the results table: the delay per phase of
    the rates with faults (``agent.testbed.phases``), then DTO-EE's phases cut short."""
    return phase_lines(results) + cut_short_lines(run_dir, results)
