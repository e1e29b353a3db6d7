"""MLCI in the agent: ``agent.policies.mlci`` behind the ``AgentPolicy`` interface.

A level is a worker holding the stage prefix 1..K_l (its "model"), named in
``policy_knobs.levels = [[ids of level 1], [level 2], ...]`` (default ``[["end"], ["edge"],
["cloud"]]``): in a topology every level worker serves stage 1, so the stages cannot tell the
levels apart. Every node fits the same temperatures (one per head, validation rows) at
start-up (``replay.fit``); a level's weight is its model's validation accuracy.

Per task, on the level's worker (``on_head``, after each stage with a head; the node keeps the
task's raw input and a per-task ``local`` dict):

- patience (eqs. 13-14, ``rules.patience_step``) over the plain max-softmax of successive
  heads: CONTINUE (the next stage runs here) until cnt reaches p or the level's last head;
- at the model's exit: the ensemble (eq. 11, ``rules.ensemble_add``) of the TASK's ``ens`` /
  ``ens_w`` (absent at level 1) and this level's weighted softmax of the head's logits; an
  ``ens``/``ens_w`` lower levels cannot have sent (``rules.valid_ensemble``: not a weighted
  sum of probability vectors, or ``ens_w`` above ``rules.lower_weight_bound``) is left out, the
  level starting the task's ensemble afresh (counted: ``mlci_bad_ensemble``, logged the 1st,
  10th, 100th... time);
- below the top level, offload with probability p(x) (eqs. 6-8: temperature-scaled confidence,
  ``rules.offload_probability``), drawn with the node's seeded RNG: ESCALATE with ``level``
  (the level it goes to, ``next_level``: one down or refusing is skipped, as routing does),
  ``ens``, ``ens_w`` (the raw input goes as a stage-1 TASK to that level); else ANSWER with
  the ensemble's class and confidence (eq. 12, ``rules.ensemble_answer``; ``mlci-noens``:
  the level's own output) and RESULT ``level``.

``choose_successor``: a source sends a new task to an alive worker of level 1; a level-l
worker sends an escalated task to an alive worker of level l+1, else of the level after it (a
level that is down is skipped). With every higher level down a level answers the task itself
(counted: ``mlci_kept``) instead of escalating it, and its node never reports "no route" for
them (``NodeView.answers_alone``): the highest live level serves on. An escalation still in
the outbox when every higher level goes is answered the same way (``answer_kept``, counted:
``mlci_taken_back``; ``agent.node.worker_tier``).

A level worker's counts are in the saved state (``snapshot``), with no thresholds: the
config's would be none this policy uses; ``count`` adds to the node's counters
(stats.json) once the node hands its own. ``budgets_s`` is refused in ``policy_knobs``
(``NOT_ON_A_NODE``): the deployment rule it feeds picks each level's prefix from every level's
capacity, which ``plan`` and ``simulate`` have and a node does not; a node's stages are its
config's.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from agent.config.fields import Fields
from agent.policies.api import (ANSWER, CONTINUE, ESCALATE, HeadAction, HeadInfo, NodeView,
                                TaskInfo, TieredPolicy, first_group)
from agent.policies.mlci import replay as mlci_replay
from agent.policies.mlci import rules as R

log = logging.getLogger(__name__)

# knobs of ``knobs.mlci`` a node cannot honour: refused in ``policy_knobs``, not ignored
NOT_ON_A_NODE = {
    "budgets_s": "it is the compute time the deployment rule gives each level when plan and "
                 "simulate choose the levels' prefixes; a node serves the stages of its config "
                 "(stage, last_stage; checked against prefixes when given)",
}


def parse_agent_knobs(knobs: Mapping[str, Any], where: str = "policy_knobs",
                      error: Any = None, name: str = R.POLICY_NAME) -> R.MlciParams:
    """Validate a node's knobs of policy ``name`` (``mlci``, ``tabi``, ``mlci-noens``): those
    of ``knobs.mlci`` but ``NOT_ON_A_NODE``'s, and none the variant fixes set otherwise
    (``replay.check_variant_knobs``); errors name ``where.key``. The params ``name`` runs."""
    f = Fields(knobs, where, R.MlciParamsError)
    for key in sorted(set(knobs) & set(NOT_ON_A_NODE)):
        raise f.fail(key, "not used by a node: " + NOT_ON_A_NODE[key])
    params = R.params_from_knobs(knobs, where)
    mlci_replay.check_variant_knobs(name, knobs, where)
    return mlci_replay.variant(params, name)


class MlciPolicy(TieredPolicy):
    """``mlci``, ``tabi`` (tau 0) and ``mlci-noens`` (no ensemble) on a node."""

    name = R.POLICY_NAME
    wants_logits = True

    def __init__(self, thresholds: Mapping[int, float], knobs: Mapping[str, Any], seed: int = 0,
                 name: str = R.POLICY_NAME):
        super().__init__(thresholds, knobs, seed)
        self.name = name
        self.params = parse_agent_knobs(knobs, name=name)
        self.level = -1  # this node's level (a source: -1)
        self.top = False
        self.stages: tuple = ()  # the profile's head stages (its columns)
        self.temperatures = np.ones(0)
        self.weight = 1.0
        self.below_w = 0.0  # the lower levels' weights together (configure)
        self.escalated = 0
        self.answered = 0
        self.bad_ensemble = 0  # escalated tasks whose ens/ens_w did not fit (counted, not fatal)
        self.kept = 0  # offload draws answered here: no higher level was alive to take them
        self.taken_back = 0  # escalations answered here: every higher level went before an ACK

    def level_of(self, node_id: str) -> int:
        """The level index of ``node_id`` (-1: in none)."""
        for ell, ids in enumerate(self.params.levels):
            if node_id in ids:
                return ell
        return -1

    def configure(self, cfg: Any, view: NodeView) -> None:
        """Fit temperatures and this level's weight; check this level's stages."""
        super().configure(cfg, view)
        profile = view.exit_profile
        if profile is None:
            raise R.MlciParamsError("policy %s: the bundle has no exit profile (format 2) to "
                                    "fit temperatures and weights from" % self.name)
        self.stages = tuple(profile.exit_stages)
        self.level = self.level_of(view.node_id) if view.role == "worker" else -1
        last = max(view.stage, view.last_stage)
        if view.role == "worker":
            if self.level < 0:
                raise R.MlciParamsError("policy_knobs.levels: worker %r is in no level (levels: "
                                        "%s)" % (view.node_id, list(self.params.levels)))
            want = self.params.prefixes[self.level] if self.params.prefixes else last
            if view.stage != 1 or last != want or (last < view.num_stages
                                                   and last not in self.stages):
                raise R.MlciParamsError("policy_knobs.levels: level %d's worker %r must hold "
                                        "stages 1..K (K = %d, a stage with a head), it holds "
                                        "%d..%d" % (self.level, view.node_id, want, view.stage,
                                                    last))
        # without ``prefixes`` a node knows only its own level's prefix: the others' stand in
        # as the whole model, so of the fitted weights only this level's own is used
        prefixes = self.params.prefixes or tuple(
            last if ell == self.level else view.num_stages
            for ell in range(len(self.params.levels)))
        model = mlci_replay.fit(profile, self.params, prefixes)
        self.temperatures = model.temperatures
        self.weight = float(model.weights[self.level]) if self.level >= 0 else 1.0
        # what an escalated TASK's ensemble weight can be: the lower levels' weights together
        self.below_w = R.lower_weight_bound(self.params, max(self.level, 0), model.weights,
                                            model.head_accuracies)
        self.top = self.level == len(self.params.levels) - 1
        # a level answers what it cannot escalate: a higher level down is no "no route"
        view.answers_alone = self.level >= 0

    def thresholds(self) -> Dict[int, float]:
        return {}  # every exit is on_head's

    def on_head(self, head: HeadInfo, view: NodeView) -> HeadAction:
        """Patience, then the ensemble and the offload draw (module docstring)."""
        p = self.params
        local = head.local
        prev = local.get("conf")
        cnt = local.get("cnt", 0)
        done = head.last or head.stage >= max(view.stage, view.last_stage)
        if prev is not None:
            cnt = R.patience_step(cnt, prev, head.confidence, p.tau)
            done = done or cnt >= p.patience
        local["conf"], local["cnt"] = head.confidence, cnt
        if not done:
            return HeadAction(CONTINUE)
        if head.logits is None:  # a head without logits cannot join the ensemble: answer
            return HeadAction(ANSWER, fields={"level": self.level})
        probs = R.softmax(head.logits)
        vec = self._incoming(head.fields, len(probs))
        if vec is None and ("ens" in head.fields or "ens_w" in head.fields):  # malformed: this
            # level starts afresh (half an ensemble, either half, is no level-0 task)
            self._bad_ensemble(head, len(probs))
        wsum = 0.0 if vec is None else float(head.fields["ens_w"])
        vec, wsum = R.ensemble_add(vec, wsum, self.weight, probs)
        if p.ensemble:
            _, cls, conf = R.ensemble_answer(vec, wsum)
        else:
            cls = int(np.argmax(probs))
            conf = float(probs[cls])
        if not self.top:
            col = self.stages.index(head.stage)
            up = R.offload_probability(
                float(R.tempered_confidence(head.logits, float(self.temperatures[col]))),
                p.confidence_threshold, p.k)
            if self.rng.random() < up:
                to = self.next_level(view)
                if to is not None:
                    self.escalated += 1  # cls, conf: the answer kept here (answer_kept)
                    return HeadAction(ESCALATE, cls=cls, confidence=conf,
                                      fields={"level": to, "ens": [float(v) for v in vec],
                                              "ens_w": float(wsum)})
                self.kept += 1  # every higher level is down: the ensemble so far answers
        self.answered += 1
        return HeadAction(ANSWER, cls=cls, confidence=conf, fields={"level": self.level})

    def next_level(self, view: NodeView) -> Optional[int]:
        """The level an escalation from this level goes to now (its TASK's ``level``): the
        first higher level with a worker taking tasks, the one ``choose_successor`` picks (a
        level that is down or refusing is skipped); with every live one refusing, the first
        with a worker alive, busy or not (the task waits for it); None: every higher level
        is down. Decided at the draw: a TASK the outbox routes again later (a refusal, a lost
        ACK) to another level keeps it (``choose_successor`` does not see the TASK's fields)."""
        higher = self.params.levels[self.level + 1:]
        for usable in (True, False):
            i = first_group(higher, view.alive_successors(1, usable=usable))[0]
            if i >= 0:
                return self.level + 1 + i
        return None

    def answer_kept(self, escalated: HeadAction) -> HeadAction:
        """The ANSWER for a task this level escalated (``escalated``, from ``on_head``) that
        no higher level can take any more (every one went while the TASK was in the outbox):
        what the level answers when it finds every higher level down at the draw, the ensemble
        so far (``mlci-noens``: its own output), counted in ``mlci_taken_back``."""
        self.taken_back += 1
        self.answered += 1
        return HeadAction(ANSWER, cls=escalated.cls, confidence=escalated.confidence,
                          fields={"level": self.level})

    def _bad_ensemble(self, head: HeadInfo, classes: int) -> None:
        """Count an escalated task whose ensemble lower levels cannot have sent; log the 1st,
        10th, 100th... (a faulty or hostile lower level would otherwise log every task)."""
        self.bad_ensemble += 1
        self.count("mlci_bad_ensemble")
        if str(self.bad_ensemble).strip("0") == "1":
            ens = head.fields.get("ens")
            log.warning("mlci level %d: task %s came with an ensemble lower levels cannot have "
                        "sent (ens of %d values for %d classes, ens_w %r; the lower levels' "
                        "weights add up to %g); this level starts it afresh (%d such tasks so "
                        "far)", self.level, head.id,
                        len(ens) if isinstance(ens, (list, tuple)) else 0, classes,
                        head.fields.get("ens_w"), self.below_w, self.bad_ensemble)

    def _incoming(self, fields: Mapping[str, Any], classes: int) -> Optional[np.ndarray]:
        """The TASK's running ensemble sum (None at level 1, or when malformed or out of
        range: ``rules.valid_ensemble``)."""
        ens, w = fields.get("ens"), fields.get("ens_w")
        if ens is None or w is None or len(ens) != classes:
            return None
        vec = np.asarray(ens, dtype=np.float64)
        return vec if R.valid_ensemble(vec, float(w), self.below_w) else None

    def choose_successor(self, task: TaskInfo, view: NodeView,
                         exclude: Sequence[str] = ()) -> Optional[str]:
        """A new or escalated task: an alive worker of the next level up that is alive."""
        if task.stage != 1:
            return super().choose_successor(task, view, exclude)
        return self.pick(self.params.levels[self.level + 1:], view, 1, exclude)[1]

    def snapshot(self) -> Dict[str, Any]:
        """No thresholds (every exit is ``on_head``'s: the config's are never used); a level
        worker's level and counts (a source has neither)."""
        state = super().snapshot()
        state["thresholds"] = {}
        if self.level < 0:
            return state
        state.update({"mlci_level": self.level, "mlci_escalated": self.escalated,
                      "mlci_answered": self.answered, "mlci_bad_ensemble": self.bad_ensemble,
                      "mlci_kept": self.kept, "mlci_taken_back": self.taken_back})
        return state


def level_counts(records: List[Mapping[str, Any]], levels: int) -> List[int]:
    """Completed records per answering level (RESULT ``level``), for reports and checks."""
    out = [0] * levels
    for r in records:
        lv = r.get("level")
        if r.get("status") == "completed" and isinstance(lv, int) and 0 <= lv < levels:
            out[lv] += 1
    return out
