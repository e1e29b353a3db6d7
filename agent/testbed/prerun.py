"""What a testbed run refuses before its run folder exists: policies the topology's tiers
cannot run, and agent configs that would not start. What the agents' start-up would warn of
is said here once per distinct line, naming the agents (``SaidOnce``), not once per agent."""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

from agent.errors import UsageError

# agents a grouped warning names before it only counts the rest: a line stays readable
# for a topology of dozens of agents
NAMED_AGENTS = 8


def check_tiers(topo, policies) -> None:
    """Terminal workers short of the last stage (DIMEE's tiers) need a per-task policy, as in
    ``plan`` and ``simulate``: the others would answer every task at the first tier it reaches,
    whatever its confidence."""
    from agent.policies.registry import lookup, names

    if not any(w.terminal and w.stages[1] < topo.num_stages for w in topo.workers):
        return
    tiered = [n for n in names("agent") if lookup(n, "--policies").tiered]
    wrong = [p for p in policies if not lookup(p, "--policies").tiered]
    if wrong:
        raise UsageError("--policies: the topology %s has tiers (terminal workers), which need a "
                         "per-task policy (%s); %s cannot run on it"
                         % (topo.path or "given", ", ".join(tiered), ", ".join(wrong)))


def check_slot(topo) -> None:
    """A slot must hold its configuration phase; said with the topology's own fields (the
    agents' configs would name their derived ``slot_length_s``)."""
    from agent.config.checks import phase_fits
    from agent.config.node import NodeConfig

    got = {k: topo.agent.get(k, getattr(NodeConfig, k)) for k in ("rounds_per_slot",
                                                                   "round_interval_s")}
    if not all(type(v) in (int, float) for v in got.values()):
        return  # not numbers: the agents' own check names them
    if not phase_fits(got["rounds_per_slot"], got["round_interval_s"], topo.slot_s):
        raise UsageError("%s: slot_s: %g s must be longer than the configuration phase, %g s (%s)"
                         % (topo.path or "topology", topo.slot_s,
                            got["rounds_per_slot"] * got["round_interval_s"], " x ".join(
                             ("agent.%s %g%s" if k in topo.agent else "%s %g%s (the default)")
                             % (k, v, " s" if k.endswith("_s") else "") for k, v in got.items())))


class SaidOnce(logging.Handler):
    """Holds what the ``agent`` loggers log between ``start`` and ``finish`` (their records
    reach no other handler then), each record under the agent being checked (``agent``);
    ``finish`` then logs each distinct message once, from the logger that logged it, with the
    agents that said it when more than one did: ``... are not used (10 agents: cam1, cam2,
    w1a, ...)``. The testbed checks every agent's config as its start would, so a warning
    every agent's policy gives on a shared setting came once per agent: ten identical lines."""

    def __init__(self) -> None:
        super().__init__()
        self.agent: Optional[str] = None  # the agent whose config is being checked
        self._said: Dict[Tuple[int, str, str], Tuple[logging.LogRecord, List[str]]] = {}
        self._logger = logging.getLogger("agent")
        self._propagate = True

    def start(self) -> "SaidOnce":
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False  # held here until finish, then logged once
        return self

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.levelno, record.name, record.getMessage())
        names = self._said.setdefault(key, (record, []))[1]
        if self.agent is not None and self.agent not in names:
            names.append(self.agent)

    def finish(self) -> None:
        """Stop holding, and log what was held: each distinct message once, in order."""
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate
        said, self._said = self._said, {}
        for (_, name, message), (record, agents) in said.items():
            if len(agents) > 1:
                shown = ", ".join(agents[:NAMED_AGENTS]) + (
                    " and %d more" % (len(agents) - NAMED_AGENTS)
                    if len(agents) > NAMED_AGENTS else "")
                record = logging.makeLogRecord(dict(record.__dict__, args=None, msg=(
                    "%s (%d agents: %s)" % (message, len(agents), shown))))
            logging.getLogger(name).handle(record)


def check_node_configs(topo, bundle, policies, rates, duration_s: float, seed: int) -> None:
    """Every agent's config of every policy, parsed and its policy made as the run will, before
    the run folder exists: a bad agent field, id, knob or placement (a DIMEE worker in no tier)
    fails here, not in an empty run folder, said at the topology's field with the agent
    (``FILE: knobs.dimee.tiers: ... (testbed node w1a)``); of the agents whose message or
    queue limit is below their need, the one with the largest need is named
    (``limits.largest_need``)."""
    if topo.fleet is not None:  # a fleet's agents run from their own rendered configs
        from agent.testbed.fleet import client_keys, fleet_settings

        client_keys(topo, fleet_settings(topo))
        return
    check_slot(topo)
    said = SaidOnce().start()
    try:
        _check_each_agent(topo, bundle, policies, rates, duration_s, seed, said)
    finally:  # what was said, once, before the error (if one) that ends the run
        said.finish()


def _check_each_agent(topo, bundle, policies, rates, duration_s: float, seed: int,
                      said: SaidOnce) -> None:
    """``check_node_configs`` of a local run, each agent's warnings held by ``said``."""
    import tempfile

    from agent.node.book import open_replay
    from agent.node.build import build_view, check_config, configured_policy, open_exit_profile
    from agent.node.limits import LimitError, largest_need
    from agent.testbed.local import node_configs
    from agent.testbed.nodeparts import agent_start_error, check_fixed_rows
    from agent.testbed.topology import TopologyError

    check_fixed_rows(topo)  # every row against the links: a row of no node is no agent's
    ports = list(range(20000, 20000 + 2 * len(topo.node_ids())))  # checked, never bound
    profile = open_exit_profile(bundle)
    # the sources' replay sets, each (path, rows) once: one that does not fit the bundle's
    # input (a bundle of one's own with the demo set) stopped its source after the workers
    # had started
    replays = set()
    with tempfile.TemporaryDirectory(prefix="edge-agent-check-") as scratch:
        for policy in policies:
            said.agent = None  # the testbed's own, until an agent's config is checked
            cfgs = node_configs(topo, bundle.path, policy, rates[0], topo.warmup_s + duration_s,
                                scratch, seed, ports)
            short = []  # limits below an agent's need: the largest said once all are seen
            for cfg in cfgs.values():  # as each agent's start makes it: a placement it refuses
                said.agent = cfg.node_id
                try:
                    try:
                        check_config(cfg, bundle)
                    except LimitError as exc:  # checked last there: the other checks passed
                        short.append(exc)
                    configured_policy(cfg, bundle, build_view(cfg, bundle, profile))
                    if cfg.role == "source" and (cfg.replay_path, cfg.replay_rows) not in replays:
                        open_replay(cfg, bundle)
                        replays.add((cfg.replay_path, cfg.replay_rows))
                except TopologyError:
                    raise
                except UsageError as exc:  # the agent's words: said at the topology's field
                    raise agent_start_error(topo, exc, cfg.node_id, policy) from None
            if short:  # one topology-wide limit: the value that fixes every agent at once
                raise largest_need(short)
