"""MDI-Exit Alg. 2, offloading from worker n to its one-hop neighbours (re-exported by ``rules``).

The paper compares waiting times: kept, the head task of O_n waits I_n Gamma_n (every task in
n's input queue runs first); sent to m, it waits D_nm + I_m Gamma_m (transfer, then m's input
queue). Its footnote 1 takes Gamma the same for every task; the testbed's devices are identical,
so the task's own run, Gamma_n kept or Gamma_m sent, is the same on both sides and drops out.

On a mixed fleet it does not: an idle neighbour scores D_nm however slow it is, so a device ten
times slower than its peers takes a task whenever it is idle and that task takes ten times as
long. With ``count_own_service`` (a knob, off by default: the paper's rule) both sides count
the task's own run as well, the delay until it is done rather than until it starts:
(I_n + 1) Gamma_n kept against D_nm + (I_m + 1) Gamma_m sent. Every comparison Alg. 2 makes
uses the same two functions, ``local_delay_s`` and ``remote_delay_s``: kept against each
neighbour (the probability of lines 2-5) and neighbours among themselves (the order they are
tried in). The gate O_n > I_m compares queue lengths, not delays, and stays as it is.

A node that cannot run the task's next stage (a source without a processor, a one-stage worker)
has no kept delay: the adapters pass Gamma_n = inf, and the paper's rule gives a probability of 1
to every neighbour past the gate, so the first of them in order takes the task. On a mixed fleet
that is the slow device whenever the fast one has I_m >= O_n, and counting the own run in the
order alone changes nothing. Under ``count_own_service`` such a node's option other than a
neighbour is to hold the task for a faster one: only a neighbour whose D_nm + (I_m + 1) Gamma_m
is the least of all its neighbours' (the gated ones too) takes it, when O_n > I_m; otherwise it
stays in O_n and is offered again. The line-4 draw is not made for the slower ones: the task is
offered again at every tick, so even a small probability would hand it to them after a few
offers.

The agent adapter (``agent.py``) and the simulator adapter (``sim.py``) both call
``choose_neighbour`` with ``params.count_own_service``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence


@dataclass(frozen=True)
class NeighbourState:
    """What node n knows about a one-hop neighbour m."""

    id: str
    input_len: int  # I_m, from m's last queue-state message
    compute_delay_s: float  # Gamma_m: m's per-task compute delay
    transfer_delay_s: float  # D_nm: time to send one task n -> m


def local_delay_s(input_len: int, compute_delay_s: float,
                  count_own_service: bool = False) -> float:
    """The head task's delay if n keeps it: I_n Gamma_n (the paper's waiting time), or
    (I_n + 1) Gamma_n with ``count_own_service`` (waiting plus its own run on n)."""
    if compute_delay_s == math.inf:  # a node that cannot run the stage: 0 * inf would be NaN
        return math.inf
    return (input_len + (1 if count_own_service else 0)) * compute_delay_s


def remote_delay_s(neighbour: NeighbourState, count_own_service: bool = False) -> float:
    """The head task's delay if n sends it to m: D_nm + I_m Gamma_m (the paper's waiting
    time), or D_nm + (I_m + 1) Gamma_m with ``count_own_service`` (plus its own run on m)."""
    queued = neighbour.input_len + (1 if count_own_service else 0)
    return neighbour.transfer_delay_s + queued * neighbour.compute_delay_s


def offload_probability(output_len: int, input_len: int, compute_delay_s: float,
                        neighbour: NeighbourState, count_own_service: bool = False) -> float:
    """Alg. 2 for one neighbour: the probability of offloading the head task to it.

    With L = ``local_delay_s`` and R = ``remote_delay_s``: 1 when O_n > I_m and L > R (line 2);
    min(L / R, 1) when only O_n > I_m (line 4); 0 when O_n <= I_m. The paper's L and R are
    I_n Gamma_n and D_nm + I_m Gamma_m; ``count_own_service`` adds the task's own run to both.
    """
    if output_len <= neighbour.input_len:
        return 0.0
    local_s = local_delay_s(input_len, compute_delay_s, count_own_service)
    remote_s = remote_delay_s(neighbour, count_own_service)
    # an infinite local wait (a node that cannot run the stage) offloads whatever the remote
    # one: inf / inf would be NaN, which no draw accepts, and the task would wait forever
    if local_s > remote_s or remote_s <= 0.0 or local_s == math.inf:
        return 1.0
    return min(local_s / remote_s, 1.0)


def choose_neighbour(output_len: int, input_len: int, compute_delay_s: float,
                     neighbours: Sequence[NeighbourState],
                     uniform: Callable[[], float],
                     count_own_service: bool = False) -> Optional[str]:
    """Alg. 2 over all one-hop neighbours: who takes the head of the output queue, or None.

    Neighbours are tried in order of ``remote_delay_s`` (D_nm + I_m Gamma_m; with
    ``count_own_service`` D_nm + (I_m + 1) Gamma_m), ties by id; the first with probability 1
    takes the task, a neighbour with probability p in (0, 1) takes it when a fresh draw
    ``uniform()`` (in [0, 1), e.g. ``rng.random``) is below p. Draws are made only for such
    neighbours, so a test can script them. With ``count_own_service`` a node that cannot run
    the stage (``compute_delay_s`` inf) gives the task only to its fastest neighbour
    (``_fastest_past_gate``, no draw).
    """
    ordered = sorted(neighbours, key=lambda m: (remote_delay_s(m, count_own_service), m.id))
    if count_own_service and compute_delay_s == math.inf:
        return _fastest_past_gate(output_len, ordered)
    probs = [(m, offload_probability(output_len, input_len, compute_delay_s, m,
                                     count_own_service))
             for m in ordered]
    for m, p in probs:
        if p >= 1.0:
            return m.id
    for m, p in probs:
        if p > 0.0 and uniform() < p:
            return m.id
    return None


def _fastest_past_gate(output_len: int, ordered: Sequence[NeighbourState]) -> Optional[str]:
    """For a node that cannot run the stage, with ``count_own_service``: the first neighbour of
    ``ordered`` (sorted by ``remote_delay_s`` with the own run) whose delay is the least of
    all and that passes the gate O_n > I_m; None holds the task for it (module docstring)."""
    if not ordered:
        return None
    least_s = remote_delay_s(ordered[0], True)
    for m in ordered:
        if remote_delay_s(m, True) > least_s:
            break  # sorted: every later one is slower still
        if output_len > m.input_len:
            return m.id
    return None
