"""MLCI learned from an exit profile (format 2: logits and labels) and replayed exactly.

``fit`` is what every place that runs MLCI does at start-up: a temperature per head and a
weight per level from the validation rows. ``expected_replay`` is exact, not sampled: for each
row it walks the levels with P(reach l+1) = P(reach l) p_l(x) and sums P(stop at l) times the
correctness and the latency (eqs. 1-3) of stopping there, so its numbers are deterministic.
``walk`` is one task's seeded walk through the per-sample functions of ``rules`` (what the
simulator and the agent do per task); a test holds the two equal in expectation.
``plan_report`` is ``edge-agent plan --policy mlci|tabi|mlci-noens``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.config.fields import Fields
from agent.errors import UsageError
from agent.policies.mlci import rules as R
from agent.policies.plan_report import PlanReport
from agent.policies.splits import test_rows, validation_rows
from engines.exit_profile import ExitProfile

# what each name fixes of MLCI's knobs: a node's or a testbed's knobs of that name may not set
# them otherwise (``check_variant_knobs``); a scenario's shared ``knobs.mlci`` is MLCI's own
VARIANTS = {"mlci": {}, "tabi": {"tau": 0.0}, "mlci-noens": {"ensemble": False}}
GRID_T = (0.7, 0.8, 0.9)
GRID_TAU = (0.0, 1e-5, 1e-4, 1e-2, 5e-2, 1e-1)


def variant(params: R.MlciParams, name: str) -> R.MlciParams:
    """The params of policy ``name``: ``tabi`` = tau 0, ``mlci-noens`` = no ensemble."""
    if name not in VARIANTS:
        raise UsageError("mlci: unknown variant %r (known: %s)" % (name, ", ".join(VARIANTS)))
    return replace(params, **VARIANTS[name])


def check_variant_knobs(name: str, knobs: Mapping[str, Any], where: str) -> None:
    """Refuse a knob of ``knobs`` (those given to policy ``name`` itself) that the variant
    fixes, set to another value: ``where.tau: tabi fixes it at 0 (use policy "mlci" to set
    it), got 0.5``; the value it fixes is accepted."""
    Fields(knobs, where, R.MlciParamsError).refuse_fixed(VARIANTS.get(name, {}), name,
                                                         R.POLICY_NAME)


@dataclass(frozen=True)
class MlciSetting:
    """The physical side of eqs. 1-3: FLOPs per stage, capacity per level (FLOP/s), the rate
    between level l and l+1 (bytes/s) and the bytes sent up (the raw input, beta_1)."""

    stage_flops: Tuple[float, ...]
    capacities: Tuple[float, ...]
    rates: Tuple[float, ...]
    payload_bytes: float


@dataclass(frozen=True)
class MlciModel:
    """What ``fit`` learns and decides: each level's prefix end K_l and its heads' profile
    columns, a temperature per head, a weight and a validation accuracy per level, and every
    head's validation accuracy (what any level's accuracy weight can be)."""

    prefixes: Tuple[int, ...]
    cols: Tuple[Tuple[int, ...], ...]
    temperatures: np.ndarray
    weights: np.ndarray
    accuracies: np.ndarray
    head_accuracies: np.ndarray


def _need_logits(profile: ExitProfile) -> None:
    if profile.logits is None or profile.label is None:
        raise UsageError("mlci: the exit profile has no logits or labels (format 2); profile "
                         "the bundle again with edge-agent profile")


def candidates(profile: ExitProfile, stage_flops: Sequence[float],
               rows: Optional[np.ndarray] = None) -> List[R.Candidate]:
    """Every prefix ending at a head, with its FLOPs and validation accuracy."""
    rows = validation_rows(profile.num_samples) if rows is None else rows
    cum = np.cumsum(stage_flops)
    return [R.Candidate(s, float(cum[s - 1]), float(profile.correct[rows, k].mean()))
            for k, s in enumerate(profile.exit_stages)]


def choose_prefixes(profile: ExitProfile, params: R.MlciParams,
                    setting: MlciSetting) -> Tuple[int, ...]:
    """``params.prefixes`` if given, else ``deploy`` over the profile's prefixes."""
    if params.prefixes is not None:
        return params.prefixes
    levels = [R.LevelBudget("/".join(names), cap, b) for names, cap, b in
              zip(params.levels, setting.capacities, params.budgets_s)]
    return R.deploy(candidates(profile, setting.stage_flops), levels)


def fit(profile: ExitProfile, params: R.MlciParams, prefixes: Sequence[int],
        rows: Optional[np.ndarray] = None) -> MlciModel:
    """Temperatures (eq. 6, per head, or ``params.temperature`` for all) and level weights
    (``level_weight`` of each level model's last-head accuracy, or ``params.weights``)."""
    _need_logits(profile)
    rows = validation_rows(profile.num_samples) if rows is None else rows
    cols = []
    for ell, end in enumerate(prefixes):
        if end not in profile.exit_stages:
            raise R.MlciParamsError("mlci.prefixes[%d]: stage %d carries no head (heads at %s)"
                                    % (ell, end, list(profile.exit_stages)))
        cols.append(tuple(k for k, s in enumerate(profile.exit_stages) if s <= end))
    k = len(profile.exit_stages)
    if params.temperature == "fit":
        temps = np.array([R.fit_temperature(profile.logits[rows, c], profile.label[rows])
                          for c in range(k)])
    else:
        temps = np.full(k, float(params.temperature))
    acc = np.array([profile.correct[rows, c[-1]].mean() for c in cols])
    weights = (np.array([R.level_weight(a) for a in acc]) if params.weights == "accuracy"
               else np.asarray(params.weights, dtype=np.float64))
    heads = np.array([profile.correct[rows, c].mean() for c in range(k)])
    return MlciModel(tuple(prefixes), tuple(cols), temps, weights, acc, heads)


@dataclass(frozen=True)
class MlciReplay:
    """Per-row expectations (rows ascending) and their means."""

    rows: np.ndarray
    stop: np.ndarray  # (N, L) probability the task stops (is answered) at level l
    correct: np.ndarray  # (N, L) bool: the answer is right when it stops at level l
    latency_s: np.ndarray  # (N, L) eqs. 1-3 latency when it stops at level l
    exit_col: np.ndarray  # (N, L) the profile column where level l's model exits

    @property
    def accuracy(self) -> float:
        return float((self.stop * self.correct).sum(axis=1).mean())

    @property
    def mean_latency_s(self) -> float:
        return float((self.stop * self.latency_s).sum(axis=1).mean())

    @property
    def level_fractions(self) -> np.ndarray:
        return self.stop.mean(axis=0)


def expected_replay(profile: ExitProfile, model: MlciModel, params: R.MlciParams,
                    setting: MlciSetting, rows: Optional[Sequence[int]] = None) -> MlciReplay:
    """The exact expectation over the offload draws of accuracy, latency and where tasks are
    answered, on ``rows`` (default the test rows)."""
    _need_logits(profile)
    rows = test_rows(profile.num_samples) if rows is None else np.sort(np.asarray(rows))
    n, levels = len(rows), len(model.cols)
    cum = np.cumsum(setting.stage_flops)
    stop = np.zeros((n, levels))
    correct = np.zeros((n, levels), dtype=bool)
    lat = np.zeros((n, levels))
    exit_col = np.zeros((n, levels), dtype=np.int64)
    reach = np.ones(n)
    vec, wsum, elapsed = np.zeros((n, profile.num_classes)), 0.0, np.zeros(n)
    label = profile.label[rows]
    for ell, cols in enumerate(model.cols):
        at = np.asarray(cols)[R.model_exits(profile.confidence[rows][:, cols], params.tau,
                                            params.patience)]
        exit_col[:, ell] = at
        logits = profile.logits[rows, at]
        elapsed = elapsed + cum[np.asarray(profile.exit_stages)[at] - 1] / setting.capacities[ell]
        lat[:, ell] = elapsed
        probs = R.softmax(logits)
        if params.ensemble:
            vec, wsum = vec + model.weights[ell] * probs, wsum + model.weights[ell]
            correct[:, ell] = np.argmax(vec / wsum, axis=1) == label
        else:
            correct[:, ell] = np.argmax(probs, axis=1) == label
        if ell == levels - 1:
            stop[:, ell] = reach
            break
        conf = R.tempered_confidence(logits, model.temperatures[at][:, None])
        p_up = R.offload_probability(conf, params.confidence_threshold, params.k)
        stop[:, ell] = reach * (1.0 - p_up)
        reach = reach * p_up
        elapsed = elapsed + setting.payload_bytes / setting.rates[ell]
    return MlciReplay(rows, stop, correct, lat, exit_col)


def walk(profile: ExitProfile, model: MlciModel, params: R.MlciParams, setting: MlciSetting,
         row: int, rng: np.random.Generator) -> Tuple[int, bool, float]:
    """One task on ``row`` through the per-sample functions, offload drawn with ``rng``
    (``uniform() < p``): (answering level, correct, eqs. 1-3 latency)."""
    cum = np.cumsum(setting.stage_flops)
    vec, wsum, exit_flops = None, 0.0, []
    for ell, cols in enumerate(model.cols):
        at = cols[R.model_exit(profile.confidence[row, list(cols)], params.tau,
                               params.patience)]
        exit_flops.append(float(cum[profile.exit_stages[at] - 1]))
        logits = profile.logits[row, at]
        probs = R.softmax(logits)
        if params.ensemble:
            vec, wsum = R.ensemble_add(vec, wsum, float(model.weights[ell]), probs)
            _, cls, _ = R.ensemble_answer(vec, wsum)
        else:
            cls = int(np.argmax(probs))
        last = ell == len(model.cols) - 1
        if last or not rng.uniform() < R.offload_probability(
                float(R.tempered_confidence(logits, float(model.temperatures[at]))),
                params.confidence_threshold, params.k):
            lat = R.latency_s(exit_flops, setting.capacities, setting.payload_bytes,
                              setting.rates)
            return ell, bool(cls == profile.label[row]), lat
    raise AssertionError("unreachable: the top level always answers")


def reference(profile: ExitProfile, model: MlciModel, setting: MlciSetting, level: int,
              rows: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Level ``level``'s model alone, the input relayed up to it: accuracy and latency."""
    rows = test_rows(profile.num_samples) if rows is None else rows
    end = model.prefixes[level]
    flops = float(np.cumsum(setting.stage_flops)[end - 1])
    # eqs. 1-3 with nothing computed below ``level``: the input relayed up, then its model
    lat = R.latency_s([0.0] * level + [flops], setting.capacities, setting.payload_bytes,
                      setting.rates)
    return {"accuracy": float(profile.correct[rows, model.cols[level][-1]].mean()),
            "latency_s": lat}


def summary(res: MlciReplay) -> Dict[str, Any]:
    """accuracy, latency_s and level fractions as plain numbers."""
    return {"accuracy": res.accuracy, "latency_s": res.mean_latency_s,
            "level_fractions": [float(v) for v in res.level_fractions]}


def grid(profile: ExitProfile, model: MlciModel, params: R.MlciParams, setting: MlciSetting,
         ts: Sequence[float] = GRID_T, taus: Sequence[float] = GRID_TAU) -> List[Dict[str, Any]]:
    """Table I's grid: the exact replay for every (t, tau)."""
    out = []
    for t in ts:
        for tau in taus:
            p = replace(params, confidence_threshold=t, tau=tau)
            out.append(dict({"t": t, "tau": tau},
                            **summary(expected_replay(profile, model, p, setting))))
    return out


def plan_report(profile: ExitProfile, params: R.MlciParams, setting: MlciSetting,
                name: str = R.POLICY_NAME) -> Dict[str, Any]:
    """``plan --policy mlci|tabi|mlci-noens``: deployment, temperatures, weights, the exact
    replay on the test rows, the single-level references and the (t, tau) grid."""
    params = variant(params, name)
    prefixes = choose_prefixes(profile, params, setting)
    model = fit(profile, params, prefixes)
    res = expected_replay(profile, model, params, setting)
    out: Dict[str, Any] = {"policy": name, "deployment": list(prefixes),
                           "temperatures": [float(t) for t in model.temperatures],
                           "weights": [float(w) for w in model.weights / model.weights.sum()],
                           "rows": "validation rows learn, test rows report"}
    out.update(summary(res))
    out["references"] = {"-".join(params.levels[l]) + "-only": reference(profile, model,
                                                                          setting, l)
                         for l in range(len(prefixes))}
    out["grid"] = grid(profile, model, params, setting)
    return out


def setting_from_scenario(scenario: Any, params: R.MlciParams) -> MlciSetting:
    """eqs. 1-3's inputs from a scenario: stage FLOPs, the stage-1 input as payload, level l's
    capacity (a worker on one of its devices) and the rate of a link from a node on level l's
    devices to one on level l+1's (the first such link)."""
    dev = {w.id: w.device or w.id for w in scenario.workers}
    dev.update({s.id: s.device or s.id for s in scenario.sources})
    caps, rates = [], []
    for ell, names in enumerate(params.levels):
        cap = [w.capacity for w in scenario.workers if dev[w.id] in names]
        if not cap:
            raise UsageError("knobs.mlci.levels[%d]: no worker on device(s) %s in the scenario "
                             "(each level names the devices it runs on: a tiered scenario's "
                             "workers have a device)" % (ell, ", ".join(names)))
        caps.append(cap[0])
    for ell, (names, up_names) in enumerate(zip(params.levels, params.levels[1:])):
        up = [l.rate for l in scenario.links if dev[l.src] in names and dev[l.dst] in up_names]
        if not up:
            raise UsageError("knobs.mlci.levels[%d]: no link from %s to level %d (%s)"
                             % (ell, ", ".join(names), ell + 1, ", ".join(up_names)))
        rates.append(up[0])
    return MlciSetting(tuple(s.flops for s in scenario.stages), tuple(caps), tuple(rates),
                       float(scenario.stages[0].input_bytes))


def planner(scenario: Any, name: str) -> Any:
    """``plan --policy mlci|tabi|mlci-noens`` on a scenario: its exit profile (format 2 with
    logits and labels), ``knobs.mlci`` and the levels' capacities and links."""
    if scenario.exit_profile is None:
        raise UsageError("plan --policy %s: the scenario needs an exit_profile (format 2, with "
                         "logits and labels)" % name)
    params = R.params_from_knobs(scenario.knobs.get(R.POLICY_NAME))
    setting = setting_from_scenario(scenario, params)
    return PlanReport(name, plan_report(scenario.exit_profile, params, setting, name))
