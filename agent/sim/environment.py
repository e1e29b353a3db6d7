"""What changes between slots: source rates, worker power modes, and the Poisson arrivals.

Every draw comes from a generator seeded by ``(seed, slot, stream)``, so two runs with the same
seed see the same environment and the same tasks (same arrival times, same validation samples)
whatever the policy does: policies are compared on common random numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from agent.policies.setting import Scenario

_ENV_STREAM, _ARRIVAL_STREAM = 1, 2


@dataclass(frozen=True)
class DynamicConfig:
    """Dynamic mode: at every slot boundary the rates and power modes are redrawn."""

    rate_low: float = 0.5  # each source's rate = base rate * U(rate_low, rate_high)
    rate_high: float = 1.5
    # capacity factors drawn for a worker that lists no power_modes (capacity = base * factor)
    mode_factors: Tuple[float, ...] = (1.0, 0.75, 0.5)


def scale_capacities(scenario: Scenario, factor: float) -> Scenario:
    """The scenario with every worker's capacity (and power modes) multiplied by ``factor``."""
    workers = tuple(dataclasses.replace(
        w, capacity=w.capacity * factor,
        power_modes=tuple((n, c * factor) for n, c in w.power_modes)) for w in scenario.workers)
    return dataclasses.replace(scenario, workers=workers)


def with_source_rate(scenario: Scenario, rate: float) -> Scenario:
    """The scenario with every source producing ``rate`` tasks/s."""
    sources = tuple(dataclasses.replace(s, rate=float(rate)) for s in scenario.sources)
    return dataclasses.replace(scenario, sources=sources)


def slot_scenario(base: Scenario, slot: int, dynamic: Optional[DynamicConfig],
                  seed: int) -> Scenario:
    """The setting in force during ``slot``: ``base`` itself unless ``dynamic`` is given."""
    if dynamic is None:
        return base
    rng = np.random.default_rng([seed, slot, _ENV_STREAM])
    factors = rng.uniform(dynamic.rate_low, dynamic.rate_high, size=len(base.sources))
    sources = tuple(dataclasses.replace(s, rate=s.rate * float(f))
                    for s, f in zip(base.sources, factors))
    workers = []
    drawn = {}  # device -> capacity: stages held by one device switch mode together
    for w in base.workers:
        device = w.device or w.id
        if device not in drawn:
            if w.power_modes:
                drawn[device] = w.power_modes[int(rng.integers(len(w.power_modes)))][1]
            else:
                drawn[device] = w.capacity * dynamic.mode_factors[
                    int(rng.integers(len(dynamic.mode_factors)))]
        workers.append(dataclasses.replace(w, capacity=float(drawn[device])))
    return dataclasses.replace(base, sources=sources, workers=tuple(workers))


def slot_arrivals(scenario: Scenario, start_s: float, end_s: float, seed: int, slot: int,
                  num_samples: int, rows: Optional[np.ndarray] = None
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson arrivals of every source in ``[start_s, end_s)``, merged in time order.

    Returns ``(times_s, source_index, sample_index)``; ``sample_index`` picks the validation
    sample (row of the exit profile) the task carries, uniformly, among ``rows`` when given
    (the same draws index into them, so a seed gives the same tasks whatever the policy).
    """
    rng = np.random.default_rng([seed, slot, _ARRIVAL_STREAM])
    span = end_s - start_s
    rates = np.array([s.rate for s in scenario.sources], dtype=np.float64)
    counts = rng.poisson(rates * span)
    total = int(counts.sum())
    # given the count, Poisson arrival times are uniform on the interval
    times = start_s + rng.random(total) * span
    sources = np.repeat(np.arange(len(rates)), counts)
    order = np.argsort(times, kind="stable")
    if rows is not None:
        return times[order], sources[order], np.asarray(rows)[rng.integers(0, len(rows),
                                                                            size=total)]
    samples = rng.integers(0, max(num_samples, 1), size=total)
    return times[order], sources[order], samples
