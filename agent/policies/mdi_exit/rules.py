"""MDI-Exit: queue-based early exit, offloading and admission control (MDI-Exit paper, Algs. 1-4).

How this project reads Alg. 3 and the idle reclaim (agent and simulator both decide through
``Admission`` and ``should_reclaim`` here). Section IV-B: the source "may already have the data
or collect the data from the environment according to some distribution", and "the source worker
collects/generates data by following the 'inference rate' that MDI-Exit imposes"; "Our policy
determines the interarrival time of data mu at the source". So the camera keeps producing at its
own rate (nothing slows it down) and the source collects an arrival only when at least mu
seconds passed since the last one it collected: one admitted arrival per mu at most. An arrival
not admitted is never processed; it is recorded as rejected. mu adapts from the source worker's
queue total I_n + O_n: "if I_n + O_n < T_Q1, then the interarrival time mu is reduced" by alpha
mu, between T_Q1 and T_Q2 by beta mu, "if I_n + O_n > T_Q2, interarrival time is increased" by
zeta mu, and "after every update on interarrival time mu, the algorithm sleeps for s seconds"
(``Period``). The idle reclaim is not in the paper; it extends Alg. 1 lines 8-9 ("if The input
queue I_n is empty OR O_n > T_O then Insert the new task tau_{k+1}(d) to I_n", "as it means that
local processing of tasks at Worker n is faster") to a task already in O_n: when Alg. 2 has kept the
head of the output queue (no neighbour took it) and the node's input queue is empty, the node
takes that head task back into I_n and runs it itself, one task per decision.

Every MDI-Exit node is a worker that may hold several (or all) stages. It keeps two queues, which
the adapters own (the simulator's node state, the agent's engine queue and outbox): the input
queue I_n (tasks it will process itself) and the output queue O_n (tasks waiting to be offloaded
to a one-hop neighbour). A task is one data item
at one stage: processing it runs that stage (tau_k in the paper).

How a node uses this module (the simulator adapter, ``sim.py``, does all four; the agent adapter,
``agent.py``, does 2-4 and Alg. 1's queue choice on a worker holding several stages):

1. Alg. 1, worker loop: pop the head of ``input_queue``, run the stage, get the head's logits and
   ``head_confidence(logits)`` (eqs. 1-2, max softmax). ``next_step(...)`` says EXIT (answer goes
   to the source), LOCAL (the next stage's task joins I_n) or OFFLOAD (it joins O_n); when Alg. 2
   keeps the head of O_n, ``should_reclaim`` says whether an idle node takes it back.
2. Alg. 2, sender: while ``output_queue`` is not empty, ``choose_neighbour(...)`` with the latest
   ``NeighbourState`` of each one-hop neighbour (its I_m and Gamma_m, published on the control
   plane, and the measured transfer delay D_nm) names the neighbour that takes the head task, or
   None (keep it and try again when neighbour state changes). Alg. 2 is in ``offload.py``,
   re-exported here.
3. Alg. 3 at a source with admission control: ``Admission.admit(now_s)`` per arrival, and
   when ``Period.due(now_s)`` (every ``adapt_interval_s`` seconds) ``Admission.adapt(I_n + O_n)``.
4. Alg. 4 with threshold adaptation: when ``Period.due(now_s)``,
   ``adapt_threshold(T_e, I_n + O_n, params)`` gives the one threshold used by every exit head;
   ``exit_threshold`` is what every head applies (T_e: the knob ``threshold``, fixed without
   adaptation, Alg. 4's start with it).

Exit rule. The paper exits when C > T_e (strict); this project has one exit rule for the agent,
the simulator and the accuracy table, ``engines.exit_profile.should_exit`` (C >= T_e), and MDI-Exit
uses it too. The two differ only on exact ties: with continuous confidences a tie has probability
zero, except at T_e = 1 where ``>=`` lets a saturated softmax (C == 1.0 in float64) exit, so the
accuracy the table predicts for a threshold is the accuracy MDI-Exit gets with it.

Boundaries the paper leaves open, decided here: in Alg. 1 "the input queue is empty" is checked
after the processed task left it; in Algs. 3-4 a queue total exactly equal to T_Q1 or T_Q2 changes
nothing (the paper's comparisons are all strict); in Alg. 2 a neighbour whose expected delay
D_nm + I_m Gamma_m is 0 takes the task with probability 1. Additions not in the paper, each a
parameter: a node without neighbours keeps every task (its output queue would never drain), an
idle node takes back the head of its own output queue (``reclaim_when_idle``), Alg. 2 may count
the task's own run on each candidate, for fleets of unequal devices (``count_own_service``), and
the inter-arrival time starts at ``initial_interarrival_s`` and stays within
[``min_interarrival_s``, ``max_interarrival_s``].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from agent.config.checks import MAX_INTERVAL_S, MIN_INTERVAL_S
from agent.config.fields import Fields
from agent.errors import UsageError
from engines.exit_profile import should_exit, softmax_confidence

# Alg. 2 lives in its own module; its names stay reachable here, where both adapters look
from agent.policies.mdi_exit.offload import (  # noqa: F401
    NeighbourState, choose_neighbour, local_delay_s, offload_probability, remote_delay_s)

POLICY_NAME = "mdi-exit"

# Alg. 1 outcomes for a processed task
EXIT = "exit"  # answer at this head, result to the source
LOCAL = "local"  # next stage's task into this node's input queue
OFFLOAD = "offload"  # next stage's task into this node's output queue

# Alg. 3/4 queue bands (I_n + O_n against T_Q1 < T_Q2)
BAND_LOW = "low"  # below T_Q1: speed up a lot (alpha)
BAND_MID = "mid"  # strictly between T_Q1 and T_Q2: speed up a little (beta)
BAND_HIGH = "high"  # above T_Q2: slow down (zeta)


# Alg. 3's mu at least, s (a million tasks/s): its steps multiply mu by 1 - alpha and 1 + zeta,
# and a subnormal mu (5e-324 * 1.2 == 5e-324) could never back off again.
MIN_INTERARRIVAL_S = 1e-6


class MdiExitParamsError(UsageError):
    """An MDI-Exit parameter is out of range; the message names the field."""


@dataclass(frozen=True)
class MdiExitParams:
    """MDI-Exit constants; defaults are the paper's Section V where it gives them."""

    output_queue_limit: float = 50  # T_O, tasks: above it new tasks stay local (Alg. 1)
    queue_low: float = 10  # T_Q1, tasks: below it Alg. 3/4 push by alpha
    queue_high: float = 30  # T_Q2, tasks: above it Alg. 3/4 back off by zeta
    alpha: float = 0.2  # large step when queues are short, 0 < beta < alpha < 1
    beta: float = 0.1  # small step when queues are moderate
    zeta: float = 0.2  # back-off step when queues are long, 0 < zeta < 1
    threshold: float = 0.8  # T_e at every exit: fixed, or Alg. 4's starting value
    min_threshold: float = 0.5  # T_e^min: Alg. 4's floor (the paper names it without a value)
    adapt_interval_s: float = 1.0  # s: sleep between runs of Alg. 3/4 (no value in the paper)
    state_interval_s: float = 0.1  # how often a node publishes I_n and Gamma_n to its neighbours
    initial_interarrival_s: float = 1.0  # Alg. 3's starting mu (the source starts slowly)
    min_interarrival_s: float = 1e-3  # Alg. 3 never asks for more than 1000 tasks/s
    max_interarrival_s: float = 10.0  # Alg. 3 never drops below one task per 10 s
    admission_control: bool = False  # run Alg. 3 at sources (paper's fixed-threshold scenario)
    threshold_adaptation: bool = False  # run Alg. 4 (paper's fixed-rate scenario)
    early_exit: bool = True  # False: the no-exit variant, every task runs to the final stage
    reclaim_when_idle: bool = True  # an idle node takes back its own oldest queued-for-offload task
    count_own_service: bool = False  # Alg. 2 adds the task's own run to both delays (offload.py)

    def __post_init__(self) -> None:
        _check({f.name: getattr(self, f.name) for f in fields(self)}, POLICY_NAME)


_BOOL_FIELDS = ("admission_control", "threshold_adaptation", "early_exit", "reclaim_when_idle",
                "count_own_service")


def exit_threshold(params: MdiExitParams, adapted: float) -> Optional[float]:
    """T_e, the one threshold of every exit head of a node (the paper's T_e^k <- T_e, Alg. 4
    line 9): None without early exit, Alg. 4's ``adapted`` value with threshold adaptation (it
    starts at ``params.threshold``), else the fixed ``params.threshold``. The node and the
    simulator both apply this; a node's configured per-exit thresholds play no part."""
    if not params.early_exit:
        return None
    return adapted if params.threshold_adaptation else params.threshold


def exit_thresholds(params: MdiExitParams, configured: Mapping[int, float],
                    adapted: float) -> Dict[int, float]:
    """``{exit stage: T_e}`` for the exit stages that are ``configured``'s keys (its values
    are not used: ``exit_threshold``); empty without early exit (only the final stage
    answers)."""
    th = exit_threshold(params, adapted)
    return {} if th is None else {h: th for h in configured}


def _check(values: Mapping[str, Any], where: str) -> None:
    """Raise ``MdiExitParamsError`` naming ``where.field`` for the first bad value."""
    f = Fields(values, where, MdiExitParamsError)
    for name in values:
        if name in _BOOL_FIELDS:
            f.bool(name)
        else:
            f.num(name)
    for name in ("output_queue_limit", "queue_low", "queue_high"):
        f.num(name, lo=0.0)
    if values["queue_high"] < values["queue_low"]:
        raise f.fail("queue_high", "must be >= queue_low (%r)" % values["queue_low"])
    for name in ("alpha", "beta", "zeta"):
        f.num(name, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    if values["alpha"] <= values["beta"]:
        raise f.fail("alpha", "must be greater than beta (%r)" % values["beta"])
    for name in ("threshold", "min_threshold"):
        f.num(name, lo=0.0, hi=1.0, lo_open=True)
    if values["threshold_adaptation"] and values["threshold"] < values["min_threshold"]:
        raise f.fail("threshold", "must be >= min_threshold (%r) when threshold_adaptation is on"
                     % values["min_threshold"])
    # periods within a node's own (a node ticks every state_interval_s: below 1 ms its loop
    # only spins), gaps from a million tasks/s to one a day
    for name in ("adapt_interval_s", "state_interval_s"):
        f.num(name, lo=MIN_INTERVAL_S, hi=MAX_INTERVAL_S)
    for name in ("initial_interarrival_s", "min_interarrival_s", "max_interarrival_s"):
        f.num(name, lo=MIN_INTERARRIVAL_S, hi=MAX_INTERVAL_S)
    if values["max_interarrival_s"] < values["min_interarrival_s"]:
        raise f.fail("max_interarrival_s", "must be >= min_interarrival_s (%r)"
                     % values["min_interarrival_s"])


def params_from_knobs(knobs: Optional[Mapping[str, Any]],
                      where: str = "knobs.mdi-exit") -> MdiExitParams:
    """Build ``MdiExitParams`` from a decoded mapping (scenario knobs, node config).

    Missing keys keep their defaults; unknown keys (with the closest known name) and bad values
    raise ``MdiExitParamsError`` naming ``where.key``.
    """
    f = Fields({} if knobs is None else knobs, where, MdiExitParamsError)
    names = [fl.name for fl in fields(MdiExitParams)]
    f.reject_unknown(names)
    values = {fl.name: f.value(fl.name) if f.has(fl.name) else fl.default
              for fl in fields(MdiExitParams)}
    _check(values, where)
    lo, hi = values["min_interarrival_s"], values["max_interarrival_s"]
    if f.has("initial_interarrival_s") and not lo <= values["initial_interarrival_s"] <= hi:
        raise f.fail("initial_interarrival_s", "must be in [min_interarrival_s, "
                     "max_interarrival_s] = [%g, %g]" % (lo, hi))
    return MdiExitParams(**values)  # unset, the start is the default within them (Admission)


def head_confidence(logits: np.ndarray) -> Tuple[float, int]:
    """Eqs. (1)-(2) for one task: (max softmax confidence, predicted class) of an exit head."""
    conf, cls = softmax_confidence(logits)
    return float(conf[0]), int(cls[0])


def next_step(confidence: Optional[float], threshold: float, input_len: int, output_len: int,
              params: MdiExitParams, final: bool = False, has_neighbours: bool = True) -> str:
    """Alg. 1 lines 5-12: what happens after a node processed its head-of-line task.

    ``confidence`` is the exit head's C (None at a stage without a head), ``input_len`` is I_n
    after the processed task left the input queue, ``output_len`` is O_n. The final stage always
    answers. Returns ``EXIT``, ``LOCAL`` or ``OFFLOAD``.
    """
    if final:
        return EXIT
    if params.early_exit and confidence is not None and should_exit(confidence, threshold):
        return EXIT
    if input_len == 0 or output_len > params.output_queue_limit or not has_neighbours:
        return LOCAL
    return OFFLOAD


def should_reclaim(input_len: int, output_len: int, params: MdiExitParams) -> bool:
    """Whether an idle node takes back the head of its own output queue (module docstring).

    Asked when Alg. 2 has just kept that head task; ``output_len`` counts it. Not in the paper:
    without it a node whose input queue ran dry waits while tasks sit in its output queue that
    no neighbour currently accepts (Alg. 2 needs O_n > I_m).
    """
    return params.reclaim_when_idle and input_len == 0 and output_len > 0


def queue_band(queued: float, params: MdiExitParams) -> Optional[str]:
    """The band of I_n + O_n that Algs. 3 and 4 branch on; None exactly at T_Q1 or T_Q2."""
    if queued < params.queue_low:
        return BAND_LOW
    if params.queue_low < queued < params.queue_high:
        return BAND_MID
    if queued > params.queue_high:
        return BAND_HIGH
    return None


def adapt_interarrival(interarrival_s: float, queued: float, params: MdiExitParams) -> float:
    """Alg. 3: the source's next inter-arrival time mu from its queue total I_n + O_n.

    Short queues: mu - alpha mu; moderate: mu - beta mu; long: mu + zeta mu; clamped to
    [min_interarrival_s, max_interarrival_s]. Call it every ``adapt_interval_s`` seconds.
    """
    band = queue_band(queued, params)
    if band == BAND_LOW:
        mu = interarrival_s - params.alpha * interarrival_s
    elif band == BAND_MID:
        mu = interarrival_s - params.beta * interarrival_s
    elif band == BAND_HIGH:
        mu = interarrival_s + params.zeta * interarrival_s
    else:
        mu = interarrival_s
    return bounded_interarrival(mu, params)


def bounded_interarrival(interarrival_s: float, params: MdiExitParams) -> float:
    """mu clamped to [min_interarrival_s, max_interarrival_s]."""
    return min(max(interarrival_s, params.min_interarrival_s), params.max_interarrival_s)


class Admission:
    """Alg. 3 at one source: which arrivals are admitted, and the interarrival time mu.

    With ``admission_control`` off every arrival is admitted and mu is left alone.
    """

    def __init__(self, params: MdiExitParams):
        self.params = params
        self.interarrival_s = bounded_interarrival(params.initial_interarrival_s, params)  # mu
        self.last_admitted_s = -math.inf  # the first arrival is always admitted

    def admit(self, now_s: float) -> bool:
        """Whether the arrival at ``now_s`` is admitted: at least mu since the last admitted one.

        The camera does not wait for the source: an arrival refused here is rejected.
        """
        if not self.params.admission_control:
            return True
        if now_s - self.last_admitted_s >= self.interarrival_s:
            self.last_admitted_s = now_s
            return True
        return False

    def adapt(self, queued: float) -> float:
        """One run of Alg. 3 on the source worker's queue total I_n + O_n; returns the new mu."""
        if self.params.admission_control:
            self.interarrival_s = adapt_interarrival(self.interarrival_s, queued, self.params)
        return self.interarrival_s

    def seed(self, interarrival_s: float) -> None:
        """Start mu at ``interarrival_s`` (what the fed nodes serve), within the bounds, when
        that is shorter than mu now."""
        self.interarrival_s = bounded_interarrival(min(self.interarrival_s, interarrival_s),
                                                   self.params)

    def restore(self, interarrival_s: Any) -> None:
        """Take a saved mu back when it is a float within the configured bounds."""
        p = self.params
        if isinstance(interarrival_s, float) and \
                p.min_interarrival_s <= interarrival_s <= p.max_interarrival_s:
            self.interarrival_s = interarrival_s


class Period:
    """Algs. 3-4's "sleep for s seconds": ``due(now_s)`` is True once per ``interval_s``.

    Without ``start_s`` the first call starts the clock (and says False).
    """

    def __init__(self, interval_s: float, start_s: Optional[float] = None):
        self.interval_s = interval_s
        self.next_s = None if start_s is None else start_s + interval_s

    def due(self, now_s: float) -> bool:
        """True when the sleep is over; the next one starts at ``now_s``."""
        if self.next_s is None:
            self.next_s = now_s + self.interval_s
            return False
        if now_s >= self.next_s:
            self.next_s = now_s + self.interval_s
            return True
        return False


def adapt_threshold(threshold: float, queued: float, params: MdiExitParams) -> float:
    """Alg. 4: the next exit threshold T_e (used by every head) from the queue total I_n + O_n.

    Short queues: min(1, T_e + alpha T_e); moderate: min(1, T_e + beta T_e); long:
    max(T_e^min, T_e - zeta T_e). Call it every ``adapt_interval_s`` seconds.
    """
    band = queue_band(queued, params)
    if band == BAND_LOW:
        return min(1.0, threshold + params.alpha * threshold)
    if band == BAND_MID:
        return min(1.0, threshold + params.beta * threshold)
    if band == BAND_HIGH:
        return max(params.min_threshold, threshold - params.zeta * threshold)
    return threshold


def params_dict(params: MdiExitParams) -> Dict[str, Any]:
    """The parameters as a plain dict (for logs, records and config files)."""
    return {f.name: getattr(params, f.name) for f in fields(params)}
