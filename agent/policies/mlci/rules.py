"""MLCI (seed paper 001, Zhang et al.): multi-level cloud-edge-end collaborative inference.

Levels 1..L (end, edge, cloud) each run their own model on the raw input; a model has an exit
head per layer and stops early by a patience rule; after it, the task goes up a level with a
probability that falls with the model's temperature-scaled confidence; the answer is a weighted
ensemble of the softmax outputs of every level that ran. Here a level's model is a stage prefix
1..K_l of the bundle (``deploy`` picks K_l) and a "layer" is a stage with a head.

Equations (Section II-F and III), each implemented once:

- eq. 5 ``softmax``; eq. 6 ``tempered_confidence``: max softmax(logits / T), T fitted per head
  on the validation rows by ``fit_temperature`` (negative log-likelihood, T in [0.05, 20]).
- eqs. 7-8 ``offload_probability``: p = 1 when conf <= t, else 1 / (1 + exp(k norm)) with
  norm = (conf - t)/(1 - t) - 1/2.
- eqs. 13-14 ``patience_step``: diff = |max softmax_k - max softmax_(k-1)|; cnt + 1 when
  diff < tau, 0 when diff > tau, unchanged when diff == tau; ``model_exit``: the head at which
  cnt reaches p, else the model's last head. tau = 0 never exits early (Tabi).
- eqs. 11-12 ``ensemble_add`` / ``ensemble_answer``: sum of w_l softmax_l over the levels that
  ran, normalised by the sum of their weights; w_l = ``level_weight``(validation accuracy of
  level l's model). ``valid_ensemble`` refuses a running sum lower levels cannot have sent,
  its weight above ``lower_weight_bound``.
- eq. 10 ``prune_mask``: keep token y when imp_y > alpha ave (no attention in the demo CNN, so
  nothing is pruned: a tested pure function only).
- eqs. 1-3 ``latency_s``: compute of every level that ran plus the transfers made.

Resolutions of what the paper leaves open (spec 3.6): p = 1, k = 10; eqs. 11 and 13 use the
plain softmax (T only enters eq. 6); the offload decision is on the model's own confidence; the
top level never offloads; a task's return trip is not in eq. 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from agent.config.fields import Fields, is_finite
from agent.errors import UsageError
from engines.exit_profile import inf_as_limit

POLICY_NAME = "mlci"
TEMPERATURE_RANGE = (0.05, 20.0)


class MlciParamsError(UsageError):
    """An MLCI knob is out of range; the message names the field."""


@dataclass(frozen=True)
class MlciParams:
    """MLCI's knobs (``knobs.mlci``); defaults are our choices where the paper gives none."""

    confidence_threshold: float = 0.8  # t of eq. 7, in (0, 1)
    k: float = 10.0  # eq. 7's scale, > 0 (not given in the paper)
    tau: float = 0.01  # eq. 14's threshold, >= 0; 0 = no early exit (Tabi)
    patience: int = 1  # p: exit when cnt reaches it (not given in the paper)
    temperature: Union[str, float] = "fit"  # "fit" (per head, validation NLL) or a fixed T
    weights: Union[str, Tuple[float, ...]] = "accuracy"  # w_l: "accuracy" or one per level
    ensemble: bool = True  # False: a task's answer is the last level's own output
    prune_alpha: Optional[float] = None  # eq. 10's alpha; None = no pruning (no knob sets it yet)
    levels: Tuple[Tuple[str, ...], ...] = (("end",), ("edge",), ("cloud",))  # devices per level
    prefixes: Optional[Tuple[int, ...]] = None  # K_l per level; None = ``deploy`` picks them
    # deploy: compute time allowed per level (plan, simulate; a node refuses it: its stages
    # are its config's, and the rule needs every level's capacity)
    budgets_s: Tuple[float, ...] = (0.04, 0.06, 0.04)


KNOB_NAMES = tuple(f.name for f in fields(MlciParams))
MAX_PREFIX_STAGE = 1000  # a prefix's last stage: a bundle has a handful (as a topology's stages)
# eq. 11's weights w_l: only their ratios matter (eq. 12 normalises), and within these bounds
# their sum neither overflows (1e308 each: inf, every answer class 0) nor loses the softmax in
# subnormal products
WEIGHT_RANGE = (1e-6, 1e6)


def _nums(f: Fields, key: str, n: Optional[int], lo: float, lo_open: bool) -> Tuple[float, ...]:
    values = f.list(key, min_len=1)
    if n is not None and len(values) != n:
        raise f.fail(key, "must list %d values, one per level" % n)
    for v in values:  # is_finite: a 400-digit integer has no float (OverflowError)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not is_finite(v) or (
                v <= lo if lo_open else v < lo):
            raise f.fail(key, "must list numbers %s %g" % (">" if lo_open else ">=", lo))
    return tuple(float(v) for v in values)


def _stages(f: Fields, key: str, n: int) -> Tuple[int, ...]:
    """A list of ``n`` stage numbers, whole and in [1, MAX_PREFIX_STAGE] (1.5 is no stage)."""
    values = f.list(key, min_len=1)
    if len(values) != n:
        raise f.fail(key, "must list %d values, one per level" % n)
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_PREFIX_STAGE
           for v in values):
        raise f.fail(key, "must list whole stage numbers in [1, %d]" % MAX_PREFIX_STAGE)
    return tuple(values)


def params_from_knobs(knobs: Optional[Mapping[str, Any]], where: str = "knobs.mlci",
                      extra: Sequence[str] = ()) -> MlciParams:
    """``MlciParams`` from a knob table; unknown keys (``extra`` are allowed and ignored) and
    bad values raise ``MlciParamsError`` naming ``where.key``."""
    f = Fields({} if knobs is None else knobs, where, MlciParamsError)
    f.reject_unknown(KNOB_NAMES + tuple(extra))
    d = MlciParams()
    levels = d.levels
    if f.has("levels"):
        raw = f.list("levels", min_len=1)
        if any(not isinstance(l, list) or not l or not all(isinstance(s, str) and s for s in l)
               for l in raw):
            raise f.fail("levels", "must list levels, each a non-empty list of device names")
        levels = tuple(tuple(l) for l in raw)
    temperature: Union[str, float] = d.temperature
    if f.has("temperature") and f.value("temperature") != "fit":
        # a fixed T within the range a fitted one is searched in: at T = 5e-324 eq. 6's
        # logits / T overflow and every confidence is NaN
        temperature = f.num("temperature", lo=TEMPERATURE_RANGE[0], hi=TEMPERATURE_RANGE[1])
    weights: Union[str, Tuple[float, ...]] = d.weights
    if f.has("weights") and f.value("weights") != "accuracy":
        weights = _nums(f, "weights", len(levels), 0.0, True)
        if not all(WEIGHT_RANGE[0] <= w <= WEIGHT_RANGE[1] for w in weights):
            raise f.fail("weights", "must list numbers in [%g, %g]" % WEIGHT_RANGE)
    prefixes = None
    if f.has("prefixes") and f.value("prefixes") is not None:
        prefixes = _stages(f, "prefixes", len(levels))
    if f.has("budgets_s"):
        budgets = _nums(f, "budgets_s", len(levels), 0.0, True)
    else:  # the demo's budgets for three levels; no compute limit for another number of levels
        budgets = d.budgets_s if len(levels) == len(d.budgets_s) else (math.inf,) * len(levels)
    if f.value("prune_alpha", None) is not None:
        raise f.fail("prune_alpha", "pruning (eq. 10) needs attention weights, which the "
                                    "bundle's models do not expose; leave it out")
    return MlciParams(
        confidence_threshold=f.num("confidence_threshold", d.confidence_threshold, 0.0, 1.0,
                                   lo_open=True, hi_open=True),
        k=f.num("k", d.k, lo=0.0, lo_open=True), tau=f.num("tau", d.tau, lo=0.0),
        patience=f.int("patience", d.patience, lo=1), temperature=temperature, weights=weights,
        ensemble=f.bool("ensemble", d.ensemble),
        levels=levels, prefixes=prefixes,
        budgets_s=budgets)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """eq. 5 (eq. 6's inner part with T): softmax over the last axis, float64, max subtracted."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=-1, keepdims=True)
    if np.isposinf(top).any():  # an overflowed logit: its limit, as the exit rule takes it
        z, top = inf_as_limit(z, top)
    e = np.exp(z - top)
    return e / e.sum(axis=-1, keepdims=True)


def tempered_confidence(logits: np.ndarray, temperature: float) -> np.ndarray:
    """eq. 6: max softmax(logits / T) (a scalar for one row, (N,) for a batch)."""
    return softmax(logits, temperature).max(axis=-1)


def offload_probability(conf: Union[float, np.ndarray], t: float, k: float):
    """eqs. 7-8: the probability of offloading to the next level."""
    c = np.asarray(conf, dtype=np.float64)
    norm = (c - t) / (1.0 - t) - 0.5
    with np.errstate(over="ignore"):
        p = np.where(c <= t, 1.0, 1.0 / (1.0 + np.exp(k * norm)))
    return float(p) if p.ndim == 0 else p


def patience_step(cnt: int, conf_prev: float, conf_now: float, tau: float) -> int:
    """eqs. 13-14: the counter after one more head (a tie with tau leaves it unchanged)."""
    diff = abs(conf_now - conf_prev)
    if diff < tau:
        return cnt + 1
    if diff > tau:
        return 0
    return cnt


def model_exit(confidences: Sequence[float], tau: float, patience: int) -> int:
    """The index (within the model's heads) where it exits: where cnt reaches p, else last."""
    cnt = 0
    for i in range(1, len(confidences)):
        cnt = patience_step(cnt, confidences[i - 1], confidences[i], tau)
        if cnt >= patience:
            return i
    return len(confidences) - 1


def model_exits(confidences: np.ndarray, tau: float, patience: int) -> np.ndarray:
    """``model_exit`` for every row of ``confidences`` (N, K_l), vectorised."""
    n, k = confidences.shape
    out = np.full(n, k - 1)
    cnt = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    for i in range(1, k):
        diff = np.abs(confidences[:, i] - confidences[:, i - 1])
        cnt = np.where(diff < tau, cnt + 1, np.where(diff > tau, 0, cnt))
        now = ~done & (cnt >= patience)
        out[now] = i
        done |= now
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the negative log-likelihood of ``labels`` under softmax(logits / T), a
    bounded 1-D search over [0.05, 20] (deterministic)."""
    from scipy.optimize import minimize_scalar  # loaded only when a temperature is fitted

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)

    def nll(t: float) -> float:
        s = z / t
        s = s - s.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=TEMPERATURE_RANGE, method="bounded",
                          options={"xatol": 1e-6})
    return float(res.x)


def level_weight(accuracy: float) -> float:
    """w_l before normalisation: the level model's validation accuracy (III-C)."""
    return float(accuracy)


def ensemble_add(vec: Optional[np.ndarray], wsum: float, w: float,
                 probs: np.ndarray) -> Tuple[np.ndarray, float]:
    """eq. 11: add level l's weighted softmax to the running sum (``vec`` None at level 1)."""
    p = np.asarray(probs, dtype=np.float64)
    return (w * p if vec is None else vec + w * p), wsum + w


def lower_weight_bound(params: MlciParams, level: int, level_weights: Sequence[float],
                       head_accuracies: Sequence[float]) -> float:
    """The largest ``ens_w`` (eq. 11's running weight) an escalated task can bring to level
    ``level`` (0-based): the lower levels' weights together. Explicit ``params.weights``: their
    first ``level``; accuracy weights with every level's prefix given (``params.prefixes``):
    the first ``level`` of ``level_weights`` (``replay.fit``'s for those prefixes); accuracy
    weights otherwise: a node does not know the other levels' prefixes, and each lower level's
    weight is the validation accuracy of one of the heads, so ``level`` times the largest of
    ``head_accuracies`` (a lower level's head may beat this level's: overthinking)."""
    if level <= 0:
        return 0.0
    if params.weights != "accuracy":
        return float(sum(params.weights[:level]))
    if params.prefixes is not None:
        return float(sum(level_weights[:level]))
    return float(level * max(level_weight(a) for a in head_accuracies))


def valid_ensemble(vec: np.ndarray, wsum: float, max_wsum: float) -> bool:
    """A running ensemble sum (eq. 11) that lower levels can have sent: ``wsum`` in
    (0, ``max_wsum``], the sum of their weights; each entry in [0, wsum] and all of them adding
    up to ``wsum`` (a weighted sum of probability vectors), within rounding."""
    tol = 1e-6 * wsum
    return bool(0.0 < wsum <= max_wsum * (1.0 + 1e-9) and np.all(np.isfinite(vec))
                and vec.min() >= -tol and vec.max() <= wsum + tol
                and abs(float(vec.sum()) - wsum) <= tol)


def ensemble_answer(vec: np.ndarray, wsum: float) -> Tuple[np.ndarray, int, float]:
    """eq. 12: the normalised ensemble, its class and its confidence."""
    probs = np.asarray(vec, dtype=np.float64) / wsum
    cls = int(np.argmax(probs))
    return probs, cls, float(probs[cls])


def prune_mask(importance: Sequence[float], alpha: float) -> np.ndarray:
    """eq. 10: keep (True) a token whose importance exceeds alpha times the average."""
    imp = np.asarray(importance, dtype=np.float64)
    return imp > alpha * imp.mean()


@dataclass(frozen=True)
class Candidate:
    """A model a level can hold: the prefix 1..``prefix``."""

    prefix: int
    flops: float  # compute of the whole prefix (FLOP)
    accuracy: float  # its last head's validation accuracy
    bytes: float = 0.0  # its size (0 = not known; no memory check)


@dataclass(frozen=True)
class LevelBudget:
    """What a level's device offers: capacity (FLOP/s), compute time allowed, memory."""

    name: str
    capacity: float
    budget_s: float
    memory_bytes: float = math.inf


def deploy(candidates: Sequence[Candidate], levels: Sequence[LevelBudget]) -> Tuple[int, ...]:
    """Our rule (the paper gives none): for each level in order, the most accurate candidate
    that fits its compute budget and memory and beats the level below (ties: fewer FLOPs)."""
    out: List[int] = []
    below = -math.inf
    for lv in levels:
        fits = [c for c in candidates if c.flops / lv.capacity <= lv.budget_s
                and c.bytes <= lv.memory_bytes and c.accuracy > below]
        if not fits:
            raise UsageError("mlci: no model fits level %r (capacity %.3g FLOP/s, budget %g s) "
                             "and beats the level below" % (lv.name, lv.capacity, lv.budget_s))
        best = max(fits, key=lambda c: (c.accuracy, -c.flops))
        out.append(best.prefix)
        below = best.accuracy
    return tuple(out)


def latency_s(exit_flops: Sequence[float], capacities: Sequence[float], payload_bytes: float,
              rates: Sequence[float]) -> float:
    """eqs. 1-3 for a task that ran len(exit_flops) levels: sum of each level's compute up to
    its exit head over its capacity, plus one transfer of ``payload_bytes`` per level climbed."""
    j = len(exit_flops)
    compute = sum(f / c for f, c in zip(exit_flops, capacities))
    return compute + sum(payload_bytes / r for r in list(rates)[:j - 1])


def params_dict(params: MlciParams) -> Dict[str, Any]:
    """The knob table ``params_from_knobs`` reads back into ``params``."""
    out = {f.name: getattr(params, f.name) for f in fields(params)}
    out["levels"] = [list(l) for l in params.levels]
    for key in ("weights", "prefixes", "budgets_s"):
        if isinstance(out[key], tuple):
            out[key] = list(out[key])
    return out
