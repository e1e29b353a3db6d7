"""One simulation run's settings (``SimConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional

from agent.policies.model import SIM_DEFAULT_LINK_MODEL, link_model_of
from agent.policies.splits import ROW_SETS
from agent.sim.environment import DynamicConfig


@dataclass(frozen=True)
class SimConfig:
    """One simulation run."""

    duration_s: float = 100.0  # tasks arrive during [0, duration_s); then in-flight ones drain
    slot_s: float = 5.0  # slot length; the policy re-plans at every slot boundary
    round_delay_s: float = 0.002  # communication delay of one configuration round
    warmup_s: float = 0.0  # tasks created before this are left out of the summary
    seed: int = 0  # same seed -> same arrivals, samples and dynamic changes for every policy
    # "delay": a hop costs beta/r; "shared": a link is a server of r B/s carrying the wire
    # bytes; None: the scenario's link_model knob, else SIM_DEFAULT_LINK_MODEL ("delay", the
    # paper's, for its reproductions; plan's default is "shared"); the policies plan with it too
    link_model: Optional[str] = None
    discipline: str = "ps"  # service at workers and shared links: "ps" or "fifo"
    service: str = "deterministic"  # work per task: "deterministic" (alpha) or "exponential"
    dynamic: Optional[DynamicConfig] = None  # redraw rates and power modes every slot
    drain_limit_s: float = 60.0  # serve in-flight tasks at most this long after duration_s
    # slot 0's decision is in force from time 0 (the fleet was configured before the first
    # task, as in a steady-state comparison); False: slot 0 pays its configuration phase too
    configured_start: bool = True
    # exit-profile rows the tasks carry: None = the policy's choice (all rows unless it learns
    # on the validation rows), "all", "validation" (even rows) or "test" (odd rows)
    sample_rows: Optional[str] = None

    def resolved(self, knobs: Mapping[str, Any]) -> "SimConfig":
        """This config with ``link_model`` the one a run on a scenario with ``knobs`` uses:
        its own, else the scenario's ``link_model`` knob, else ``SIM_DEFAULT_LINK_MODEL``."""
        merged: Dict[str, Any] = {"link_model": SIM_DEFAULT_LINK_MODEL}
        merged.update(knobs)
        return replace(self, link_model=self.link_model or link_model_of(merged))

    def validate(self) -> "SimConfig":
        """Raise ValueError naming the first bad field."""
        for name in ("duration_s", "slot_s"):
            if not getattr(self, name) > 0:
                raise ValueError("%s: must be > 0, got %r" % (name, getattr(self, name)))
        for name in ("round_delay_s", "warmup_s", "drain_limit_s"):
            if not getattr(self, name) >= 0:
                raise ValueError("%s: must be >= 0, got %r" % (name, getattr(self, name)))
        choices = {"link_model": (None, "delay", "shared"), "discipline": ("ps", "fifo"),
                   "service": ("deterministic", "exponential")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError("%s: must be one of %s, got %r"
                                 % (name, allowed, getattr(self, name)))
        if self.sample_rows not in (None,) + ROW_SETS:
            raise ValueError("sample_rows: must be one of %s, got %r"
                             % (", ".join(ROW_SETS), self.sample_rows))
        return self
