"""The MDI-Exit paper's topologies and settings as scenarios (``edge-agent scenario mdi-*``).

An MDI-Exit node that holds stages 1..H is H scenario workers ``n/1`` .. ``n/H`` naming one
``device`` ``n`` (one server in the simulator); the data enter at source ``n1/src`` on device
``n1``; a one-hop neighbour m of n is a link ``n/h -> m/h+1`` for every stage h, and the link
``n/h -> n/h+1`` is "keep it" (Alg. 1 LOCAL). ``agent.policies.mdi_exit.sim`` runs MDI-Exit on
them.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from agent.errors import UsageError
from agent.policies.mdi_exit import rules as mx
from agent.policies.setting import DEFAULT_TRADEOFF, Link, Scenario, Source, Worker
from agent.scenario.paper import paper_scenario

TOPOLOGIES = ("local", "2-node", "3-node-mesh", "3-node-circular", "5-node-mesh")
NO_EXIT_SUFFIX = "-noee"  # "3-node-mesh-noee": the same topology with early exit switched off
def mdi_topology(name: str, model: Scenario, capacity_flops: float, link_rate_bytes_s: float,
                 source_rate: float, local_rate_bytes_s: float = 1.0e12,
                 knobs: Optional[Mapping[str, Any]] = None) -> Scenario:
    """One of the MDI-Exit paper's topologies as a scenario, every node holding every stage.

    ``model`` gives the stages and the exit profile (or remaining ratios); its sources, workers
    and links are ignored. Node ``n1`` has the data (source ``n1/src``, ``source_rate`` tasks/s).
    ``3-node-circular`` is a directed ring n1 -> n2 -> n3 -> n1 (an undirected ring of three is
    the mesh); ``local`` is one node; a ``-noee`` suffix switches early exit off through
    ``knobs["mdi-exit"]["early_exit"]``.
    """
    base = name[:-len(NO_EXIT_SUFFIX)] if name.endswith(NO_EXIT_SUFFIX) else name
    sizes = {"local": 1, "2-node": 2, "3-node-mesh": 3, "3-node-circular": 3, "5-node-mesh": 5}
    if base not in sizes:
        raise UsageError("MDI-Exit topology %r: known %s, each also with %r"
                         % (name, ", ".join(TOPOLOGIES), NO_EXIT_SUFFIX))
    nodes = ["n%d" % (i + 1) for i in range(sizes[base])]
    if base == "3-node-circular":
        nbrs = {n: [nodes[(i + 1) % 3]] for i, n in enumerate(nodes)}
    else:
        nbrs = {n: [m for m in nodes if m != n] for n in nodes}
    H = model.num_stages
    workers = tuple(Worker("%s/%d" % (n, h), h, float(capacity_flops), device=n)
                    for n in nodes for h in range(1, H + 1))
    links = [Link("n1/src", "n1/1", float(local_rate_bytes_s))]
    for n in nodes:
        for h in range(1, H):
            links.append(Link("%s/%d" % (n, h), "%s/%d" % (n, h + 1), float(local_rate_bytes_s)))
            links.extend(Link("%s/%d" % (n, h), "%s/%d" % (m, h + 1), float(link_rate_bytes_s))
                         for m in nbrs[n])
    mk = dict((knobs or {}).get(mx.POLICY_NAME, {}))
    if base != name:
        mk["early_exit"] = False
    all_knobs = dict(knobs or {})
    all_knobs[mx.POLICY_NAME] = mx.params_dict(mx.params_from_knobs(mk))
    return Scenario(model.stages, (Source("n1/src", float(source_rate), device="n1"),), workers,
                    tuple(links), model.tradeoff, model.remaining, model.exit_profile, all_knobs,
                    comment="MDI-Exit %s topology: %d node(s), each holding all %d stages; "
                            "capacity %.3g FLOP/s per node, links %.3g B/s"
                            % (name, len(nodes), H, capacity_flops, link_rate_bytes_s),
                    synthetic=True)


def topology_names() -> Sequence[str]:
    """Every topology name ``mdi_topology`` accepts."""
    return tuple(TOPOLOGIES) + tuple(t + NO_EXIT_SUFFIX for t in TOPOLOGIES)


# the paper's two scenarios plus a plain run: knobs switched on, and the default source rate
MODES = {
    "fixed": ({}, 3.0),  # fixed threshold, Poisson arrivals
    "admission": ({"admission_control": True}, 100.0),  # Alg. 3 thins a fast camera's frames
    "adapt": ({"threshold_adaptation": True, "threshold": 0.9}, 6.0),  # Alg. 4, Poisson
}


def mdi_setting(setting: str, mode: str = "fixed", seed: int = 0, rate: Optional[float] = None,
                capacity_flops: float = 2.0e10, link_rate_bytes_s: float = 12.5e6,
                num_samples: int = 10000, tradeoff: float = DEFAULT_TRADEOFF,
                model: str = "paper-resnet101") -> Scenario:
    """``mdi-<topology>`` as a scenario: ``model``'s stages and synthetic exit profile from the
    DTO-EE paper's Table 2 (so MDI-Exit and DTO-EE run the same work) on an MDI-Exit topology.

    Defaults: 2e10 FLOP/s per node (a Jetson Nano-class device: ResNet101 in about 0.4 s) and
    12.5 MB/s links (100 Mbit/s WiFi); ``mode`` picks the paper's scenario (``MODES``).
    """
    if not setting.startswith("mdi-"):
        raise UsageError("scenario: %r is not an MDI-Exit setting (mdi-TOPOLOGY)" % setting)
    if mode not in MODES:
        raise UsageError("--mdi-mode: must be one of %s, got %r" % (", ".join(MODES), mode))
    knobs, default_rate = MODES[mode]
    base = paper_scenario(model, seed=seed, num_sources=1, num_samples=num_samples,
                          tradeoff=tradeoff)
    return mdi_topology(setting[len("mdi-"):], base, capacity_flops, link_rate_bytes_s,
                        default_rate if rate is None else rate,
                        knobs={mx.POLICY_NAME: dict(knobs)})
