"""MLCI behind the simulator's per-task hooks (scenario ``edge-agent scenario mlci-demo``).

Level l is the workers of its devices (``knobs.mlci.levels``), holding the prefix 1..K_l of the
bundle (``replay.choose_prefixes``: ``knobs.mlci.prefixes`` or the deployment rule); a worker of
level l at a stage with a head has a ``restart`` link to level l+1's stage-1 worker, so a task
goes up with its raw input (hop beta_1 / r, eq. 2's transfer). At slot 0 the policy fits what
every place running MLCI fits (``replay.fit``: a temperature per head, a weight per level) on the
validation rows of the scenario's exit profile (format 2: logits and labels).

Per task, at every head (``on_head``), through the per-sample functions the replay's ``walk``
uses: ``rules.patience_step`` (eqs. 13-14) decides whether the level's model stops here (or it
is the model's last head); at its exit, ``rules.ensemble_add``/``ensemble_answer`` (eqs. 11-12)
take in the head's softmax, and below the top level the task goes up with probability
``rules.offload_probability`` (eqs. 7-8) of ``rules.tempered_confidence`` (eq. 6), drawn with the
policy's seeded generator (``uniform() < p``). ``answer_correct`` is the ensemble's argmax against
the row's label. The answering level of each task is its answering worker's level.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from agent.policies.mlci import replay as P
from agent.policies.mlci import rules as R
from agent.policies.setting import Scenario, ScenarioError
from agent.policies.sim_api import Decision, SlotView, TieredSimPolicy, measured


class _Task:
    """One task's MLCI state: its level, the patience counter, the ensemble so far."""

    __slots__ = ("level", "cnt", "prev", "vec", "wsum", "cls", "up")

    def __init__(self, level: int):
        self.level, self.cnt, self.prev = level, 0, None
        self.vec: Optional[np.ndarray] = None
        self.wsum, self.cls, self.up = 0.0, -1, False


class MlciSimPolicy(TieredSimPolicy):
    """MLCI (``mlci``), Tabi (``tabi``: tau = 0) or MLCI without the ensemble (``mlci-noens``)
    as a per-task simulator policy; knobs from ``knobs.mlci``, overridden by ``overrides``."""

    per_task_exit = True
    per_task_answer = True
    knob_key = R.POLICY_NAME

    def __init__(self, name: str = R.POLICY_NAME, overrides: Optional[Mapping[str, Any]] = None):
        super().__init__(name, overrides)
        self.model: Optional[P.MlciModel] = None
        self._tasks: Dict[int, _Task] = {}

    def start_slot(self, view: SlotView) -> Decision:
        if view.slot == 0:
            self._build(view.scenario, view.seed)
        return Decision(info={"policy": self.name, "deployment": list(self.model.prefixes)})

    def _build(self, sc: Scenario, seed: int) -> None:
        self.params = P.variant(R.params_from_knobs(self.knobs(sc)), self.name)
        P.check_variant_knobs(self.name, self._overrides, self.name)  # knobs given to the name
        prof = sc.exit_profile
        if prof is None:
            raise ScenarioError("%s: the scenario needs an exit_profile (format 2, with logits "
                                "and labels)" % self.name)
        self.setting = P.setting_from_scenario(sc, self.params)
        prefixes = P.choose_prefixes(prof, self.params, self.setting)
        self.model = P.fit(prof, self.params, prefixes)
        self.profile = prof
        self._rng = random.Random(seed * 7919 + 0x3C1)
        level_of_dev = {d: ell for ell, names in enumerate(self.params.levels) for d in names}
        dev = {n.id: sc.device_of(n.id) for n in sc.sources + sc.workers}
        self._level = {w.id: level_of_dev.get(dev[w.id], -1) for w in sc.workers}
        top = len(prefixes) - 1
        for w in sc.workers:
            ell = self._level[w.id]
            if ell < 0 or w.stage > prefixes[ell] or (ell < top and prefixes[ell] >= sc.num_stages):
                raise ScenarioError("%s: worker %r: level devices %s must hold the prefixes %s "
                                    "(below the top level, short of stage %d)"
                                    % (self.name, w.id, [list(l) for l in self.params.levels],
                                       list(prefixes), sc.num_stages))
        stage = {w.id: w.stage for w in sc.workers}
        self._next: Dict[str, str] = {}
        self._up: Dict[str, List[str]] = {}
        self._entry: Dict[str, str] = {}
        for l in sc.links:
            if l.src not in stage:
                if self._level.get(l.dst) == 0 and stage[l.dst] == 1:
                    self._entry[l.src] = l.dst
            elif l.restart and self._level[l.dst] == self._level[l.src] + 1:
                self._up.setdefault(l.src, []).append(l.dst)
            elif dev[l.dst] == dev[l.src] and stage[l.dst] == stage[l.src] + 1:
                self._next[l.src] = l.dst
        self._col = {s: c for c, s in enumerate(prof.exit_stages)}
        self._probs = R.softmax(prof.logits)  # eq. 5 of every head of every row
        self._tconf = R.tempered_confidence(prof.logits,
                                            self.model.temperatures[None, :, None])  # eq. 6
        self._top = top

    # --- hooks ------------------------------------------------------------------------------
    def on_head(self, node: str, task: int, stage: int, view: Any) -> bool:
        """The patience rule, then at the model's exit the ensemble and the offload draw: True
        answers at this head, False goes on (next stage, or up a level when ``up``)."""
        p, ell = self.params, self._level[node]
        st = self._tasks.get(task)
        if st is None or st.level != ell:  # a new task, or one that has just come up a level
            st = self._tasks[task] = _Task(ell) if st is None else _reset(st, ell)
        row, col = view.sample_of(task), self._col[stage]
        conf = float(self.profile.confidence[row, col])
        stop = stage == self.model.prefixes[ell]  # the level model's last head
        if st.prev is not None:
            st.cnt = R.patience_step(st.cnt, st.prev, conf, p.tau)
            stop = stop or st.cnt >= p.patience
        st.prev = conf
        if not stop:
            return False
        probs = self._probs[row, col]
        if p.ensemble:
            st.vec, st.wsum = R.ensemble_add(st.vec, st.wsum, float(self.model.weights[ell]),
                                             probs)
            st.cls = R.ensemble_answer(st.vec, st.wsum)[1]
        else:
            st.cls = int(np.argmax(probs))
        if ell == self._top:
            return True
        up = R.offload_probability(float(self._tconf[row, col]), p.confidence_threshold, p.k)
        st.up = self._rng.random() < up
        return not st.up

    def route(self, node: str, task: int, view: Any) -> Optional[str]:
        """A new task to the end level's stage 1; one whose level model goes on to the next
        stage of its device; one going up to a stage-1 worker of the next level."""
        if node in self._entry:
            return self._entry[node]
        st = self._tasks[task]
        if not st.up:
            return self._next[node]
        choices = self._up.get(node)
        if not choices:
            raise ScenarioError("%s: %r has no restart link up to level %d"
                                % (self.name, node, st.level + 1))
        return choices[0] if len(choices) == 1 else self._rng.choice(choices)

    def answer_correct(self, node: str, task: int, stage: int, view: Any) -> Optional[bool]:
        """Whether the task's answer (the ensemble's class, or the last level's own) is its
        row's label."""
        st = self._tasks.pop(task)
        return bool(st.cls == self.profile.label[view.sample_of(task)])

    # --- after the run ----------------------------------------------------------------------
    def answering_level(self, result: Any, scenario: Scenario) -> np.ndarray:
        """The level that answered each task (-1 if none)."""
        ids = np.array([self._level[w.id] for w in scenario.workers] + [-1])
        return ids[result.answered_by]

    def extra_summary(self, result: Any, scenario: Scenario) -> Dict[str, Any]:
        """The deployment and the level fractions of the measured tasks."""
        sel = measured(result)
        out: Dict[str, Any] = {"deployment": list(self.model.prefixes)}
        if sel.any():
            lv = self.answering_level(result, scenario)[sel]
            out["level_fractions"] = [float(v) for v in
                                      np.bincount(lv, minlength=self._top + 1) / float(sel.sum())]
        return out


def _reset(st: _Task, level: int) -> _Task:
    """The state of a task arriving at ``level``: a fresh patience counter, the ensemble kept."""
    st.level, st.cnt, st.prev, st.up = level, 0, None, False
    return st
