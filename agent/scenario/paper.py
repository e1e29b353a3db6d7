"""The DTO-EE paper's experiment settings (Section 4.1, Table 2) as scenarios.

``paper_scenario("paper-resnet101" | "paper-bert", seed)`` builds the setting: 50 sources;
4-6 workers per stage, fewer for later stages; 2-4 receivers per offloader; each worker a Jetson
TX2, Xavier NX or AGX Xavier in one of its power modes (5x between the fastest and slowest
mode); source links 1-10 MB/s and worker links 10-20 MB/s; Table 2's FLOPs, input sizes and
exit accuracies. The exit profile is synthetic (seeded): per-sample confidences whose per-head
accuracies equal Table 2's exactly; file and profile say so.

The paper gives relative device speeds, not FLOP/s. Here one unit of relative speed is scaled so
that, at the paper's per-source rate and with every threshold at ``reference_threshold``, the
busiest stage runs at ``load`` of its capacity (documented in the scenario's comment).
"""

from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.errors import UsageError
from agent.policies.setting import Link, Scenario, Source, Stage, Worker
from engines.exit_profile import ExitProfile, exit_stats
from agent.policies.setting import DEFAULT_TRADEOFF

MB = 1.0e6

# Table 2: alpha (GFLOPs), beta (MB), accuracy of each head (None: no exit), number of classes,
# and the per-source arrival rate the paper's headline numbers use (Section 4.2).
PAPER_MODELS: Dict[str, Dict] = {
    "paper-resnet101": {
        "gflops": (2.21, 1.97, 1.97, 1.68),
        "mbytes": (0.14, 0.77, 0.77, 0.77),
        "accuracy": (None, 0.470, 0.582, 0.681),
        "classes": 1000,
        "rate": 4.8,
        "rates": (3.6, 4.2, 4.8, 5.4, 6.0),
        "dataset": "ResNet101 on ImageNet",
    },
    "paper-bert": {
        "gflops": (6.44, 8.05, 8.08, 8.08, 8.08),
        "mbytes": (0.01, 0.56, 0.56, 0.56, 0.56),
        "accuracy": (None, 0.552, 0.568, 0.572, 0.582),
        "classes": 15,
        "rate": 2.0,
        "rates": (1.2, 1.6, 2.0, 2.4, 2.8),
        "dataset": "Bert-large on Tnews",
    },
}

# Relative inference speed of each device's power modes (slowest = TX2 MAXQ = 1.0, fastest =
# AGX MAXN = 5.0, the paper's 5x spread).
DEVICE_MODES: Dict[str, Tuple[Tuple[str, float], ...]] = {
    "tx2": (("MAXQ", 1.0), ("MAXP_CORE_ARM", 1.35), ("MAXN", 1.7)),
    "nx": (("10W", 1.9), ("15W", 2.6), ("20W", 3.0)),
    "agx": (("15W", 2.4), ("30W", 3.8), ("MAXN", 5.0)),
}


def synthetic_exit_profile(accuracies: Sequence[float], exit_stages: Sequence[int],
                           num_stages: int, num_classes: int, num_samples: int = 10000,
                           seed: int = 0, v2_fields: bool = False,
                           embedding_rho: float = 0.8) -> ExitProfile:
    """A seeded exit profile whose head k answers exactly ``accuracies[k]`` of the samples.

    Each sample has a latent difficulty; head k is right on the ``accuracies[k]`` fraction of
    easiest samples, so a sample a head gets right stays right at later (more accurate) heads
    and exiting early never gains accuracy: A_max is the final head's, A_min the first's, as in
    the paper. A head's max-softmax confidence grows with the sample's margin to the head's cut,
    plus noise, between 1/classes and 1: confident answers are right more often.

    ``v2_fields`` adds synthetic logits, labels and a 16-value embedding (``synthetic_v2_fields``;
    the confidences and correctness stay exactly those drawn without it).
    """
    rng = np.random.default_rng([seed, 0xE817])
    k = len(accuracies)
    difficulty = rng.standard_normal(num_samples)
    order = np.argsort(difficulty, kind="stable")
    rank = np.empty(num_samples)
    rank[order] = (np.arange(num_samples) + 0.5) / num_samples  # easiest first, in (0, 1)
    conf = np.empty((num_samples, k))
    correct = np.empty((num_samples, k), dtype=bool)
    floor = 1.0 / num_classes
    for c, acc in enumerate(accuracies):
        correct[:, c] = rank < acc
        margin = 6.0 * (acc - rank) + 0.8 * rng.standard_normal(num_samples)
        conf[:, c] = floor + (1.0 - floor) / (1.0 + np.exp(-margin))
    note = ("synthetic: seeded (seed %d) to match per-head accuracies %s; not measured on a model"
            % (seed, ", ".join("%.3f" % a for a in accuracies)))
    if not v2_fields:
        return ExitProfile(num_stages, tuple(exit_stages), conf, correct, True, note).validate()
    logits, label, emb = synthetic_v2_fields(conf, correct, difficulty, num_classes, seed,
                                             embedding_rho)
    note += ("; synthetic logits (rest mass spread evenly), uniform labels and a 16-value "
             "embedding whose column 0 carries the difficulty (rho %g)" % embedding_rho)
    return ExitProfile(num_stages, tuple(exit_stages), conf, correct, True, note, logits=logits,
                       label=label, embedding=emb, embedding_kind="synthetic16").validate()


def synthetic_v2_fields(conf: np.ndarray, correct: np.ndarray, difficulty: np.ndarray,
                        num_classes: int, seed: int = 0, rho: float = 0.8,
                        dim: int = 16) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (N, K, C) float32, labels (N,) and an embedding (N, ``dim``) consistent with
    ``conf``/``correct``: labels uniform; a head predicts the label when correct, else a
    uniformly drawn wrong class; probability ``conf`` on the predicted class and
    ``(1 - conf)/(C - 1)`` on each other; logits = log of those. Embedding column 0 is
    ``rho * z(difficulty) + sqrt(1 - rho^2) * noise``, the other columns noise."""
    if num_classes < 2 or not 0.0 <= rho <= 1.0:
        raise UsageError("synthetic profile: needs >= 2 classes and rho in [0, 1]")
    rng = np.random.default_rng([seed, 0x5EC2])
    n, k = conf.shape
    label = rng.integers(0, num_classes, size=n).astype(np.int64)
    wrong = (label[:, None] + rng.integers(1, num_classes, size=(n, k))) % num_classes
    pred = np.where(correct, label[:, None], wrong)
    rest = (1.0 - conf) / (num_classes - 1)
    probs = np.repeat(rest[:, :, None], num_classes, axis=2)
    np.put_along_axis(probs, pred[:, :, None], conf[:, :, None], axis=2)
    logits = np.log(probs).astype(np.float32)
    z = (difficulty - difficulty.mean()) / (difficulty.std() or 1.0)
    emb = rng.standard_normal((n, dim))
    emb[:, 0] = rho * z + np.sqrt(1.0 - rho * rho) * emb[:, 0]
    return logits, label, emb.astype(np.float32)


def _draw_topology(rng: np.random.Generator, num_sources: int, counts: Sequence[int],
                   homogeneous: bool = False) -> List[Tuple[str, str, float]]:
    layers = [["ed%d" % i for i in range(num_sources)]]
    layers += [["s%dw%d" % (h + 1, i + 1) for i in range(n)] for h, n in enumerate(counts)]
    links = []
    for h in range(len(layers) - 1):
        src_layer, dst_layer = layers[h], layers[h + 1]
        lo, hi = (1.0, 10.0) if h == 0 else (10.0, 20.0)
        chosen = {a: set(rng.choice(len(dst_layer), size=min(int(rng.integers(2, 5)),
                                                             len(dst_layer)), replace=False))
                  for a in src_layer}
        # every receiver gets at least one offloader, taken from those with fewest receivers
        # (in layer order); kept linear: receivers covered and offloaders per receiver count
        covered = set().union(*chosen.values())
        by_count: Dict[int, List[int]] = {}
        for i, a in enumerate(src_layer):
            by_count.setdefault(len(chosen[a]), []).append(i)
        for j in range(len(dst_layer)):
            if j in covered:
                continue
            fewest = min(c for c, v in by_count.items() if v)
            cands = by_count[fewest]
            i = cands.pop(int(rng.integers(len(cands))))
            chosen[src_layer[i]].add(j)
            bisect.insort(by_count.setdefault(fewest + 1, []), i)
            covered.add(j)
        for a in src_layer:
            for j in sorted(chosen[a]):
                r = (lo + hi) / 2 if homogeneous else float(rng.uniform(lo, hi))
                links.append((a, dst_layer[j], r * MB))
    return links


def paper_scenario(model: str, seed: int = 0, rate: Optional[float] = None, load: float = 0.6,
                   num_sources: int = 50, num_samples: int = 10000, tradeoff: float = DEFAULT_TRADEOFF,
                   reference_threshold: float = 0.8, homogeneous: bool = False,
                   workers_per_stage: int = 0) -> Scenario:
    """The paper's setting for ``model`` (a key of ``PAPER_MODELS``), seeded.

    ``homogeneous``: the setting of the paper's threshold study (Section 4.4): 5 workers per
    stage, all Xavier NX in mode 15W, every source link 5.5 MB/s and worker link 15 MB/s.
    ``workers_per_stage`` > 0: that many workers on every stage instead of the paper's 4-6 (a
    scaled-up network for the scaling benches; the rest is drawn the same way).
    ``rate``: each source's tasks/s (default the paper's). The capacities are sized at the
    paper's rate whatever ``rate`` is, so a higher rate is a heavier load.
    """
    if model not in PAPER_MODELS:
        raise UsageError("scenario: unknown setting %r (known: %s)"
                         % (model, ", ".join(sorted(PAPER_MODELS))))
    if not 0 < load < 1:
        raise UsageError("--load: must be in (0, 1), got %r" % (load,))
    spec = PAPER_MODELS[model]
    paper_rate = spec["rate"]  # the capacities are sized at this rate, whatever the sources run
    rate = paper_rate if rate is None else float(rate)
    num_stages = len(spec["gflops"])
    rng = np.random.default_rng([seed, 0x5CE7])
    stages = tuple(Stage(g * 1e9, b * MB, a is not None and h < num_stages - 1)
                   for h, (g, b, a) in enumerate(zip(spec["gflops"], spec["mbytes"],
                                                     spec["accuracy"])))
    exit_stages = [h + 1 for h, a in enumerate(spec["accuracy"]) if a is not None]
    profile = synthetic_exit_profile([spec["accuracy"][h - 1] for h in exit_stages], exit_stages,
                                     num_stages, spec["classes"], num_samples, seed)
    counts = sorted((int(x) for x in rng.integers(4, 7, size=num_stages)), reverse=True)
    if homogeneous:
        counts = [5] * num_stages
    if workers_per_stage > 0:
        counts = [int(workers_per_stage)] * num_stages
    links = _draw_topology(rng, num_sources, counts, homogeneous)
    devices = sorted(DEVICE_MODES)
    drawn = []  # (id, stage, device, mode index)
    for h, n in enumerate(counts):
        for i in range(n):
            dev = devices[int(rng.integers(len(devices)))]
            mode = int(rng.integers(len(DEVICE_MODES[dev])))
            if homogeneous:
                dev, mode = "nx", 1
            drawn.append(("s%dw%d" % (h + 1, i + 1), h + 1, dev, mode))
    # scale one unit of relative speed so the busiest stage runs at `load`
    k = len(exit_stages) - 1
    remaining = exit_stats(profile, [reference_threshold] * k).remaining
    entering = num_sources * paper_rate * np.concatenate(([1.0], np.cumprod(remaining)[:-1]))
    speed = np.zeros(num_stages)
    for _, h, dev, m in drawn:
        speed[h - 1] += DEVICE_MODES[dev][m][1]
    demand = entering * np.array([s.flops for s in stages])
    unit = float(np.max(demand / speed)) / load
    workers = tuple(Worker(wid, h, DEVICE_MODES[dev][m][1] * unit,
                           tuple(("%s/%s" % (dev, name), s * unit)
                                 for name, s in DEVICE_MODES[dev]))
                    for wid, h, dev, m in drawn)
    sources = tuple(Source("ed%d" % i, rate) for i in range(num_sources))
    comment = ("DTO-EE paper Section %s setting, %s (Table 2), seed %d. Synthetic: topology, "
               "devices and exit profile are drawn; capacities are relative Jetson speeds times "
               "%.4g FLOP/s, chosen so the busiest stage runs at %.0f%% at %.3g tasks/s per "
               "source with thresholds %.2f%s." % (
                   "4.4 (homogeneous)" if homogeneous else "4.1", spec["dataset"], seed, unit,
                   load * 100, paper_rate, reference_threshold,
                   "" if rate == paper_rate else "; the sources offer %.4g tasks/s each" % rate))
    return Scenario(stages, sources, workers, tuple(Link(a, b, r) for a, b, r in links), tradeoff,
                    None, profile, {}, comment, True)


def paper_rates(model: str) -> Tuple[float, ...]:
    """The per-source arrival rates swept for ``model``'s delay/accuracy-vs-rate figure."""
    return tuple(PAPER_MODELS[model]["rates"])


__all__ = ["PAPER_MODELS", "DEVICE_MODES", "paper_scenario", "paper_rates",
           "synthetic_exit_profile"]
