"""The simulator: one policy on one scenario, and the live view its per-task hooks read.

``Simulator`` holds the topology as indices (successors, hop delays, the server of each worker:
workers on one device share one), the routing in force as cumulative rows and the thresholds,
and applies a policy's ``Decision``; the event loop that runs it is ``agent.sim.engine_loop``.

Per-task extensions, each off unless a scenario or policy asks for it (so a table-driven or
MDI-Exit run is the same run with or without them): terminal workers answer every task at
their stage; restart links carry a task to a stage-1 worker with its raw input (the hop is
beta_1 / r, as for any link into stage 1); ``policy.on_head`` decides at a head instead of the
threshold; ``policy.answer_correct`` overrides the head's correctness; the answering worker is
recorded; ``sample_rows`` draws the tasks' profile rows from a subset.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Dict, List

from agent.policies.model import transmission_delay, with_link_model
from agent.policies.setting import Scenario
from agent.policies.sim_api import Decision, SimPolicy, refuse_tiers
from agent.sim.config import SimConfig
from agent.sim.engine_loop import run_events
from agent.sim.results import SimResult

_ROW_TOLERANCE = 1e-6


class Simulator:
    """Runs one policy on one scenario; also the live view handed to per-task policy hooks."""

    def __init__(self, scenario: Scenario, policy: SimPolicy, config: SimConfig = SimConfig()):
        if not policy.tiered:
            refuse_tiers(scenario, "policy %r" % policy.name)
        # one link model, planned with and simulated: the config's, else the scenario's knob,
        # else SIM_DEFAULT_LINK_MODEL (the paper's, agent.policies.model says why)
        config = config.resolved(scenario.knobs)
        scenario = with_link_model(scenario, config.link_model)
        self.base = scenario
        self.policy = policy
        self.config = config.validate()
        self.scenario = scenario  # the setting of the current slot
        self.now_s = 0.0
        sc = scenario
        self._S, self._W = len(sc.sources), len(sc.workers)
        self.names = [s.id for s in sc.sources] + [w.id for w in sc.workers]
        self.index = {n: i for i, n in enumerate(self.names)}
        self.stage = [0] * self._S + [w.stage for w in sc.workers]
        self.terminal = [False] * self._S + [w.terminal for w in sc.workers]
        # workers on one device (a node holding several stages) share one server: one queue,
        # one capacity; otherwise server index == worker index
        devices: Dict[str, int] = {}
        self.server = [devices.setdefault(w.device or w.id, len(devices)) for w in sc.workers]
        self._G = len(devices)
        self.succ: List[List[int]] = [[] for _ in self.names]
        self.hop_s: List[List[float]] = [[] for _ in self.names]
        self.link_server: List[List[int]] = [[] for _ in self.names]
        for li, l in enumerate(sc.links):
            i, j = self.index[l.src], self.index[l.dst]
            self.succ[i].append(j)
            beta = sc.stages[self.stage[j] - 1].input_bytes
            self.hop_s[i].append(transmission_delay(beta, l.rate))
            self.link_server[i].append(self._G + li)
        self.succ_pos = [{self.names[j]: x for x, j in enumerate(row)} for row in self.succ]
        # uniform routing until the first decision applies (the paper's initial strategy)
        self.cum = [[(x + 1) / len(row) for x in range(len(row))] for row in self.succ]
        # thresholds of 1.0 (hardly any early exit) until a decision sets them
        self.thresholds = {h: 1.0 for h in range(1, sc.num_stages) if sc.stages[h - 1].exit}
        self.hold = [deque() for _ in self.names]  # output queues of per-task policies
        self.njobs = [0] * (self._G + len(sc.links))

    # --- live view for policies -------------------------------------------------------------
    def input_queue(self, node: str) -> int:
        """Tasks at ``node``'s server (in service or waiting; all stages of its device); 0 for a
        source."""
        i = self.index[node]
        return self.njobs[self.server[i - self._S]] if i >= self._S else 0

    def output_queue(self, node: str) -> int:
        """Tasks held at ``node`` because the policy's ``route`` returned None."""
        return len(self.hold[self.index[node]])

    def compute_delay_s(self, node: str) -> float:
        """alpha_h / mu of worker ``node`` in its current power mode (service time alone)."""
        i = self.index[node]
        return self.base.stages[self.stage[i] - 1].flops / self._mu[self.server[i - self._S]]

    def link_delay_s(self, src: str, dst: str) -> float:
        """beta / r of the hop ``src`` -> ``dst``."""
        i = self.index[src]
        return self.hop_s[i][self.succ_pos[i][dst]]

    def sample_of(self, task: int) -> int:
        """The exit-profile row ``task`` carries."""
        return self._sample[task]

    def successors(self, node: str) -> List[str]:
        """The nodes ``node`` has a link to, in file order."""
        return [self.names[j] for j in self.succ[self.index[node]]]

    # --- decisions --------------------------------------------------------------------------
    def _apply(self, decision: Decision) -> None:
        if decision.routing is not None:
            for node, row in decision.routing.items():
                i = self.index.get(node)
                if i is None or not self.succ[i]:
                    continue
                probs = [0.0] * len(self.succ[i])
                for dst, p in row.items():
                    if dst not in self.succ_pos[i] or not p >= 0:
                        raise ValueError("policy %s: routing %s -> %r: not a successor or p=%r"
                                         % (self.policy.name, node, dst, p))
                    probs[self.succ_pos[i][dst]] = float(p)
                total = sum(probs)
                if abs(total - 1.0) > _ROW_TOLERANCE:
                    raise ValueError("policy %s: routing row of %s sums to %r, not 1"
                                     % (self.policy.name, node, total))
                self.cum[i] = list(itertools.accumulate(p / total for p in probs))
                self.cum[i][-1] = 1.0
        if decision.thresholds is not None:
            for stage, c in decision.thresholds.items():
                self.thresholds[int(stage)] = float(c)

    def run(self) -> SimResult:
        """Simulate and return per-task records and per-slot decisions."""
        return run_events(self)


def simulate(scenario: Scenario, policy: SimPolicy, config: SimConfig = SimConfig()) -> SimResult:
    """Run ``policy`` on ``scenario``; see ``SimConfig`` for the knobs."""
    return Simulator(scenario, policy, config).run()
