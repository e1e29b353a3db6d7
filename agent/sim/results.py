"""Per-task records of a simulation run and the summaries made from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

UNFINISHED, COMPLETED, REJECTED = 0, 1, 2  # values of ``SimResult.status``


@dataclass
class SimResult:
    """Every task of one run (arrays indexed by task id) and the slot-by-slot decisions."""

    policy: str
    config: Any  # the SimConfig of the run
    source_ids: Tuple[str, ...]
    created_s: np.ndarray  # (N,) creation time at the source
    finished_s: np.ndarray  # (N,) time the answer exists (exit or final stage); NaN if none
    source: np.ndarray  # (N,) index into source_ids
    sample: np.ndarray  # (N,) exit-profile row the task carries
    exit_stage: np.ndarray  # (N,) 1-based stage it left at; 0 if unfinished or rejected
    status: np.ndarray  # (N,) UNFINISHED, COMPLETED or REJECTED
    correct: np.ndarray  # (N,) 1 right, 0 wrong, -1 unknown (no exit profile, or unfinished)
    slots: List[Dict[str, Any]] = field(default_factory=list)
    # (N,) index into the scenario's workers of the worker that answered; -1 if none
    answered_by: Optional[np.ndarray] = None

    @classmethod
    def build(cls, sim, created, src, sample, done, exit_stage, rejected, slots,
              answered: Optional[Dict[int, int]] = None,
              answers: Optional[Dict[int, Optional[bool]]] = None) -> "SimResult":
        """Assemble the arrays from the event loop's lists and dicts; ``answered`` maps a task
        to the worker that answered it, ``answers`` to a policy's own correctness (None: the
        exit head's)."""
        n = len(created)
        finished = np.full(n, np.nan)
        stages = np.zeros(n, dtype=np.int64)
        status = np.zeros(n, dtype=np.int8)
        if done:
            ids = np.fromiter(done.keys(), dtype=np.int64, count=len(done))
            finished[ids] = np.fromiter(done.values(), dtype=np.float64, count=len(done))
            stages[ids] = np.fromiter((exit_stage[k] for k in done), dtype=np.int64,
                                      count=len(done))
            status[ids] = COMPLETED
        status[np.asarray(rejected, dtype=np.int64)] = REJECTED
        samples = np.asarray(sample, dtype=np.int64)
        correct = np.full(n, -1, dtype=np.int8)
        profile = sim.base.exit_profile
        if profile is not None and n:
            col_of = np.zeros(sim.base.num_stages + 1, dtype=np.int64)
            for c, st in enumerate(profile.exit_stages):
                col_of[st] = c
            ok = status == COMPLETED
            correct[ok] = profile.correct[samples[ok], col_of[stages[ok]]]
        for k, right in (answers or {}).items():
            if right is not None:
                correct[k] = int(bool(right))
        by = np.full(n, -1, dtype=np.int64)
        if answered:
            by[np.fromiter(answered.keys(), dtype=np.int64, count=len(answered))] = np.fromiter(
                answered.values(), dtype=np.int64, count=len(answered))
        return cls(sim.policy.name, sim.config, tuple(s.id for s in sim.base.sources),
                   np.asarray(created, dtype=np.float64), finished,
                   np.asarray(src, dtype=np.int64), samples, stages, status, correct, slots, by)

    @property
    def delay_s(self) -> np.ndarray:
        """Response time of every task (NaN where it did not finish)."""
        return self.finished_s - self.created_s

    def summary(self, start_s: Optional[float] = None, end_s: Optional[float] = None
                ) -> Dict[str, Any]:
        """Mean/p50/p95 delay, accuracy and counts of tasks created in ``[start_s, end_s)``.

        Defaults: from the warm-up's end to the end of arrivals. Accuracy counts completed
        tasks (None without an exit profile); unfinished and rejected tasks are counted apart.
        """
        lo = self.config.warmup_s if start_s is None else start_s
        hi = self.config.duration_s if end_s is None else end_s
        sel = (self.created_s >= lo) & (self.created_s < hi)
        st = self.status[sel]
        ok = st == COMPLETED
        d = self.delay_s[sel][ok]
        corr = self.correct[sel][ok]
        known = corr >= 0
        stages = self.exit_stage[sel][ok]
        out: Dict[str, Any] = {
            "tasks": int(sel.sum()),
            "completed": int(ok.sum()),
            "rejected": int((st == REJECTED).sum()),
            "unfinished": int((st == UNFINISHED).sum()),
            "mean_delay_s": float(d.mean()) if d.size else None,
            "p50_delay_s": float(np.percentile(d, 50)) if d.size else None,
            "p95_delay_s": float(np.percentile(d, 95)) if d.size else None,
            "accuracy": float(corr[known].mean()) if known.any() else None,
            "exit_fraction": {str(int(h)): float((stages == h).mean())
                              for h in np.unique(stages)} if stages.size else {},
        }
        return out

    def slot_series(self) -> List[Dict[str, Any]]:
        """One summary per slot (tasks grouped by creation time) with the slot's decision."""
        out = []
        for i, slot in enumerate(self.slots):
            end = self.slots[i + 1]["start_s"] if i + 1 < len(self.slots) \
                else self.config.duration_s
            row = {"slot": slot["slot"], "start_s": slot["start_s"], "rounds": slot["rounds"],
                   "thresholds": slot.get("thresholds", {}),
                   "total_rate": float(sum(slot["rates"]))}
            row.update(self.summary(slot["start_s"], end))
            out.append(row)
        return out

    def save_records(self, path: str) -> None:
        """Write the per-task arrays to an ``.npz`` file."""
        np.savez_compressed(path, created_s=self.created_s, finished_s=self.finished_s,
                            source=self.source, sample=self.sample, exit_stage=self.exit_stage,
                            status=self.status, correct=self.correct,
                            source_ids=np.asarray(self.source_ids),
                            answered_by=self.answered_by if self.answered_by is not None
                            else np.full(len(self.status), -1, dtype=np.int64))
