"""The setting a policy decides on: stages, sources, workers and the links between them.

Plain frozen dataclasses, shared by every policy, the simulator and ``plan``. Reading and
writing them as files is ``agent.scenario.format``'s job; this module knows no file format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from agent.errors import UsageError

# DTO-EE rounds per configuration phase at most (knobs.rounds, plan's and simulate's --rounds):
# a setting where it does not converge runs them all, and ga at the bound plans for minutes
MAX_ROUNDS = 100000

if TYPE_CHECKING:  # only named in annotations: the setting's constants load without numpy
    from engines.exit_profile import ExitProfile


DEFAULT_TRADEOFF = 0.5  # a in U when a scenario, node config or topology does not say


class ScenarioError(UsageError):
    """A scenario file is malformed; the message names the offending field."""


@dataclass(frozen=True)
class Stage:
    flops: float  # alpha_h: compute per task of this stage, FLOP (multiply-accumulates)
    input_bytes: float  # beta_h: size of the tensor entering this stage, bytes
    exit: bool  # E_h: the stage carries an early-exit head


@dataclass(frozen=True)
class Source:
    id: str
    rate: float  # phi: task arrival rate, tasks/s
    device: str = ""  # device it runs on when that device also serves stages ("" = its own)


@dataclass(frozen=True)
class Worker:
    id: str
    stage: int  # 1-based stage it serves
    capacity: float  # mu_j, FLOP/s, in the current power mode
    # optional (name, capacity FLOP/s) per power mode the device can switch to; the simulator's
    # dynamic mode draws from these every slot
    power_modes: Tuple[Tuple[str, float], ...] = ()
    # workers naming the same device are stages held by one node (as in MDI-Exit): they share
    # one processor, so the simulator gives them one queue and one capacity ("" = its own device)
    device: str = ""
    # answers every task after its stage (a tier's last stage: DIMEE, MLCI); no outgoing links
    terminal: bool = False


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    rate: float  # r_ij, bytes/s
    # to a stage-1 worker, carrying the raw input again (a task moving up a tier: MLCI)
    restart: bool = False


@dataclass(frozen=True)
class Scenario:
    """A whole network: stages, sources (stage 0), workers and the links between stages."""

    stages: Tuple[Stage, ...]
    sources: Tuple[Source, ...]
    workers: Tuple[Worker, ...]
    links: Tuple[Link, ...]
    tradeoff: float  # a in U = a*T - (1-a)*(A - A_min)/(A_max - A_min)
    remaining: Optional[Tuple[float, ...]] = None  # I_h per stage when thresholds are fixed
    exit_profile: Optional[ExitProfile] = None  # when thresholds are tuned
    knobs: Mapping[str, Any] = field(default_factory=dict)  # policy knobs, validated by policies
    comment: str = ""  # free text carried through the file (e.g. where the setting comes from)
    synthetic: bool = False  # the setting (or its exit profile) is generated, not measured

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_of(self, node_id: str) -> int:
        """0 for a source, the 1-based stage for a worker."""
        return self._index()[node_id][0]

    def device_of(self, node_id: str) -> str:
        """The device ``node_id`` runs on: its ``device`` if given, else its own id."""
        return self._index()[node_id][1]

    def workers_of_stage(self, stage: int) -> List[Worker]:
        return [w for w in self.workers if w.stage == stage]

    def successors(self, node_id: str) -> List[str]:
        """L_i: nodes of the next stage that ``node_id`` has a link to, in file order."""
        return [l.dst for l in self.links if l.src == node_id]

    def predecessors(self, node_id: str) -> List[str]:
        """V_j: nodes of the previous stage with a link to ``node_id``, in file order."""
        return [l.src for l in self.links if l.dst == node_id]

    def link_rate(self, src: str, dst: str) -> float:
        for l in self.links:
            if l.src == src and l.dst == dst:
                return l.rate
        raise KeyError((src, dst))

    def _index(self) -> Dict[str, Tuple[int, str]]:
        """{node id: (stage, device)}, built on first use and kept: the dataclass is frozen, so
        it cannot go stale (``dataclasses.replace`` makes a new object without it)."""
        got = self.__dict__.get("_index_cache")
        if got is None:
            got = {s.id: (0, s.device or s.id) for s in self.sources}
            got.update({w.id: (w.stage, w.device or w.id) for w in self.workers})
            object.__setattr__(self, "_index_cache", got)
        return got
