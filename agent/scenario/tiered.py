"""The demo bundle on tiers (end/mobile device, edge, cloud) as scenarios for DIMEE and MLCI
(``edge-agent scenario dimee-demo|mlci-demo``).

A tier holding stages 1..k is k workers ``dev/1 .. dev/k`` naming one ``device`` (one server in
the simulator), chained by links at ``LOCAL_RATE`` (free); every tier receives the raw input.
Capacities and link rates are those of the shipped ``dimee``/``mlci`` topologies: end/mobile
2e6 FLOP/s, edge 1e7, cloud 1e8; 3.2e5 B/s to the edge and 3.2e4 B/s to the cloud. The exit
profile is the shipped one (format 2: logits, labels, embedding).

- ``dimee-demo``: the source ``mob/src`` (on device ``mob``) sends each task to one tier's
  stage-1 worker: ``mob/1..m``, ``edge/1..n`` (each tier's last stage ``terminal``: it answers
  whatever its confidence), ``cloud/1..H``.
- ``dimee-demo-ee``: the paper's Early-Exit baseline, the whole model on the mobile (``mob/1..H``,
  terminal at H) at the alpha* DIMEE chooses on ``dimee-demo`` (``knobs.dimee.grid`` = [alpha*]);
  run it with ``tier-mobile``.
- ``mlci-demo``: the source ``user/src`` (on device ``end``) sends every task to ``end/1``; each
  level's workers at a stage with a head have a ``restart`` link to the next level's stage-1
  worker (the task goes up with its raw input); level prefixes by MLCI's deployment rule.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.errors import UsageError
from agent.policies.dimee import replay as DP
from agent.policies.dimee import rules as DR
from agent.policies.mlci import replay as MP
from agent.policies.mlci import rules as MR
from agent.policies.setting import Link, Scenario, Source, Stage, Worker
from engines.exit_profile import ExitProfile

LOCAL_RATE = 1.0e12  # bytes/s between the stages of one device (free)
CAPACITY = {"end": 2.0e6, "mob": 2.0e6, "edge": 1.0e7, "cloud": 1.0e8}  # FLOP/s
EDGE_RATE, CLOUD_RATE = 3.2e5, 3.2e4  # bytes/s: to the edge, to the cloud
SETTINGS = ("dimee-demo", "dimee-demo-ee", "mlci-demo")


def demo_model() -> Tuple[Tuple[Stage, ...], ExitProfile]:
    """The shipped demo bundle's stages and exit profile (format 2)."""
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR
    from engines.exit_profile import load_exit_profile

    bundle = load_bundle(DEMO_BUNDLE_DIR)
    stages = tuple(Stage(float(s.flops), float(s.input_bytes), s.index in bundle.early_exit_stages)
                   for s in bundle.stages)
    return stages, load_exit_profile(bundle.exit_profile_path)


def _tier(dev: str, last: int, capacity: float, terminal: bool) -> List[Worker]:
    return [Worker("%s/%d" % (dev, h), h, capacity, device=dev,
                   terminal=terminal and h == last) for h in range(1, last + 1)]


def _chain(dev: str, last: int) -> List[Link]:
    return [Link("%s/%d" % (dev, h), "%s/%d" % (dev, h + 1), LOCAL_RATE) for h in range(1, last)]


def dimee_demo(rate: float = 5.0, knobs: Optional[Mapping[str, Any]] = None,
               model: Optional[Tuple[Tuple[Stage, ...], ExitProfile]] = None) -> Scenario:
    """DIMEE's three tiers on the demo: mobile 1..m and edge 1..n (terminal at their last
    stage), cloud 1..H; ``knobs["dimee"]`` (m, n, costs, ...) with the tiers' devices."""
    stages, profile = model or demo_model()
    dk = dict((knobs or {}).get(DR.POLICY_NAME) or {})
    dk.setdefault(DR.TIER_KNOB, {t: list(d) for t, d in DR.SCENARIO_TIERS.items()})
    params = DR.params_from_knobs(dk, extra=(DR.TIER_KNOB,))
    h = len(stages)
    workers: List[Worker] = []
    links = []
    for dev, last, terminal, r in (("mob", params.m, True, LOCAL_RATE),
                                   ("edge", params.n if params.n > params.m else 0, True,
                                    EDGE_RATE), ("cloud", h, False, CLOUD_RATE)):
        if last:
            workers += _tier(dev, last, CAPACITY[dev], terminal)
            links += [Link("mob/src", dev + "/1", r)] + _chain(dev, last)
    all_knobs: Dict[str, Any] = dict(knobs or {})
    all_knobs[DR.POLICY_NAME] = dict(DR.params_dict(params), tiers=dk[DR.TIER_KNOB])
    return Scenario(stages, (Source("mob/src", float(rate), device="mob"),), tuple(workers),
                    tuple(links), 0.5, None, profile, all_knobs,
                    comment="DIMEE on the demo bundle: mobile 1..%d (%.3g FLOP/s), edge 1..%d "
                            "(%.3g), cloud 1..%d (%.3g); links to the edge %.3g B/s, to the "
                            "cloud %.3g B/s" % (params.m, CAPACITY["mob"], params.n,
                                                CAPACITY["edge"], h, CAPACITY["cloud"],
                                                EDGE_RATE, CLOUD_RATE))


def dimee_demo_ee(rate: float = 5.0, knobs: Optional[Mapping[str, Any]] = None,
                  model: Optional[Tuple[Tuple[Stage, ...], ExitProfile]] = None) -> Scenario:
    """The Early-Exit baseline's setting: one mobile device holding every stage (terminal at
    the last), exits at the alpha* DIMEE fits with ``knobs.dimee`` on the three tiers."""
    stages, profile = model or demo_model()
    dk = dict((knobs or {}).get(DR.POLICY_NAME) or {})
    params = DR.params_from_knobs(dk, extra=(DR.TIER_KNOB,))
    alpha = DP.fit(profile, params, flops=[s.flops for s in stages]).alpha
    h = len(stages)
    ee = dict(DR.params_dict(params), m=h, n=h, grid=[alpha], assign="mobile", adaptive=False,
              tiers={"mobile": ["mob"]})
    all_knobs: Dict[str, Any] = dict(knobs or {})
    all_knobs[DR.POLICY_NAME] = ee
    return Scenario(stages, (Source("mob/src", float(rate), device="mob"),),
                    tuple(_tier("mob", h, CAPACITY["mob"], True)),
                    tuple([Link("mob/src", "mob/1", LOCAL_RATE)] + _chain("mob", h)), 0.5, None,
                    profile, all_knobs,
                    comment="DIMEE's Early-Exit baseline on the demo bundle: the mobile (%.3g "
                            "FLOP/s) holds stages 1..%d, exits at alpha = %.4g"
                            % (CAPACITY["mob"], h, alpha))


def mlci_demo(rate: float = 2.5, knobs: Optional[Mapping[str, Any]] = None,
              model: Optional[Tuple[Tuple[Stage, ...], ExitProfile]] = None) -> Scenario:
    """MLCI's levels end, edge, cloud on the demo, each holding the prefix the deployment rule
    (or ``knobs.mlci.prefixes``) gives it, linked upwards by restart links."""
    stages, profile = model or demo_model()
    mk = dict((knobs or {}).get(MR.POLICY_NAME) or {})
    params = MR.params_from_knobs(mk)
    devs = [names[0] for names in params.levels]
    if len(devs) != 3 or any(len(n) != 1 for n in params.levels):
        raise UsageError("mlci-demo: knobs.mlci.levels must name three devices, one per level")
    caps = tuple(CAPACITY.get(d, CAPACITY[k]) for d, k in zip(devs, ("end", "edge", "cloud")))
    setting = MP.MlciSetting(tuple(s.flops for s in stages), caps, (EDGE_RATE, CLOUD_RATE),
                             stages[0].input_bytes)
    prefixes = MP.choose_prefixes(profile, params, setting)
    h = len(stages)
    if prefixes[-1] != h:
        raise UsageError("mlci-demo: the top level must hold every stage (1..%d), got 1..%d"
                         % (h, prefixes[-1]))
    workers: List[Worker] = []
    links = [Link("user/src", devs[0] + "/1", LOCAL_RATE)]
    for ell, (dev, last, cap) in enumerate(zip(devs, prefixes, caps)):
        workers += _tier(dev, last, cap, False)
        links += _chain(dev, last)
        if ell + 1 < len(devs):
            links += [Link("%s/%d" % (dev, s), devs[ell + 1] + "/1", setting.rates[ell],
                           restart=True) for s in profile.exit_stages if s <= last]
    all_knobs: Dict[str, Any] = dict(knobs or {})
    all_knobs[MR.POLICY_NAME] = MR.params_dict(params)
    return Scenario(stages, (Source("user/src", float(rate), device=devs[0]),), tuple(workers),
                    tuple(links), 0.5, None, profile, all_knobs,
                    comment="MLCI on the demo bundle: levels %s holding stages 1..%s, %s FLOP/s; "
                            "restart links up at %.3g and %.3g B/s"
                            % (", ".join(devs), ", 1..".join(map(str, prefixes)),
                               " / ".join("%.3g" % c for c in caps), EDGE_RATE, CLOUD_RATE))


def tiered_setting(name: str, rate: Optional[float] = None,
                   knobs: Optional[Mapping[str, Any]] = None) -> Scenario:
    """``dimee-demo``, ``dimee-demo-ee`` (default 5 tasks/s) or ``mlci-demo`` (2.5 tasks/s) by
    name."""
    if name == "dimee-demo":
        return dimee_demo(5.0 if rate is None else rate, knobs)
    if name == "dimee-demo-ee":
        return dimee_demo_ee(5.0 if rate is None else rate, knobs)
    if name == "mlci-demo":
        return mlci_demo(2.5 if rate is None else rate, knobs)
    raise UsageError("scenario: unknown tiered setting %r (known: %s)" % (name, ", ".join(SETTINGS)))
