"""Exit profiles and the reuse-based accuracy table (DTO-EE paper, Section 3.1).

Pure numpy: no onnxruntime, no I/O beyond the two file helpers (``load_exit_profile`` reads
through ``engines.npzfile.load_npz``, ``save_exit_profile`` writes with ``np.savez_compressed``).
The profile stores, for every validation sample, the softmax confidence and the correctness of
every exit head (early exits and the final head). From it, ``exit_stats`` gives, for any
threshold setting, the accuracy A(C) and the fraction I_h of tasks continuing past each stage
without running the model again.

Format 2 adds optional per-sample fields: every head's raw ``logits`` (N, K, C), the ``label``,
an input ``embedding`` (N, D) with its ``embedding_kind`` (``engines.embedding``) and the
``data_sha256`` of the profiled inputs. The loader reads formats 1 and 2; the writer writes 2.

Exit rule (the single implementation, used by the agent, the simulator and this table): a task
leaves at stage h when ``confidence >= threshold_h``. The final head always answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from agent.errors import UsageError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# max softmax(logits) vs the stored confidence: float32 logits through float64 softmax on another
# CPU or SIMD path differ in the last bits, never by this much
CONFIDENCE_TOLERANCE = 1e-5

Thresholds = Union[Mapping[int, float], Sequence[float]]


PROBABILITY_SUM_TOL = 1e-3  # float32 softmax rows sum to 1 within this


def probabilities_problem(logits: np.ndarray, what: str) -> str:
    """Why ``logits`` (N, classes), the output ``what`` of a model, are softmax probabilities
    rather than logits ("" when they are not): every row at least 0 and summing to 1. The exit
    rule applies softmax itself, so probabilities give every head a confidence near 1/classes
    spread (a final head's 0.2 against 0.8 before it) and MLCI scales the wrong numbers."""
    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        return ""
    z = z.reshape(len(z), -1)
    if z.shape[1] < 2 or z.min() < 0.0 or \
            np.abs(z.sum(axis=1) - 1.0).max() > PROBABILITY_SUM_TOL:
        return ""
    return ("%s looks like softmax probabilities (every row >= 0, summing to 1): give the "
            "logits, the tensor before the Softmax (the exit rule applies softmax itself)" % what)


_max, _sum = np.maximum.reduce, np.add.reduce  # what ndarray.max and .sum reduce with


def softmax_confidence(logits: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Max-softmax confidence and predicted class per row of ``logits`` (shape (N, classes)).

    Computed in float64 with the max subtracted, so large logits neither overflow nor saturate
    early. Returns ``(confidence (N,), predicted_class (N,))``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        z = z.reshape(1, -1) if z.ndim == 1 else z.reshape(z.shape[0], -1)
    # the ufuncs' reductions themselves (what ``max`` and ``sum`` call through a Python-level
    # wrapper each) and the exponentials in place: the same figures, a few numpy calls' worth
    # of overhead less on a call made for every pass of a worker's jobs
    top = _max(z, axis=1, keepdims=True)
    # the top probability is exp(0) / sum = 1 / sum exactly: no division of the whole row (it
    # runs once per task on a worker), the same figures
    conf = _inverse_sum_exp(z, top)
    if math.isnan(sum(conf.tolist())):  # rare; a list's sum costs a tenth of a numpy test
        z, top = inf_as_limit(z, top)
        conf = _inverse_sum_exp(z, top)
    return conf, z.argmax(axis=1)


def _inverse_sum_exp(z: np.ndarray, top: np.ndarray) -> np.ndarray:
    """1 / sum(exp(z - top)) per row of ``z`` (``top``: its row maxima, keepdims)."""
    e = z - top
    np.exp(e, out=e)
    s = _sum(e, axis=1)
    return np.reciprocal(s, out=s)  # 1.0 / s, correctly rounded as the division is


def inf_as_limit(z: np.ndarray, top: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Logits ``z`` and their row maxima ``top`` (keepdims) with each row whose largest logit is
    +inf taken as its limit: a logit past its type's range (float16 overflows above 65504) is
    a large one, so the classes at +inf (0 after the shift) share the probability and the rest
    get none, not a NaN (inf - inf) that loses the task. Rows with a NaN, or all -inf, are left
    as they are (NaN). The softmax of the exit rule and of MLCI both take it."""
    inf = np.isposinf(top)
    return np.where(inf, np.where(z == np.inf, 0.0, -np.inf), z), np.where(inf, 0.0, top)


def should_exit(confidence: float, threshold: float) -> bool:
    """The exit rule: leave at this head when its confidence reaches the threshold."""
    return bool(confidence >= threshold)


@dataclass(frozen=True)
class ExitProfile:
    """Per-sample confidences and correctness of every exit head.

    ``exit_stages`` lists the 1-based stages that carry a head, ascending; the last entry is the
    final stage H (the final head). Column k of ``confidence``/``correct`` belongs to
    ``exit_stages[k]``. ``synthetic`` marks profiles generated from target accuracies rather
    than measured on a model.
    """

    num_stages: int
    exit_stages: Tuple[int, ...]
    confidence: np.ndarray  # (N, K) float64, max softmax per head
    correct: np.ndarray  # (N, K) bool, head's argmax equals the label
    synthetic: bool = False
    note: str = ""
    logits: Optional[np.ndarray] = None  # (N, K, C) float32, raw logits of every head (v2)
    label: Optional[np.ndarray] = None  # (N,) int64, ground-truth label of each row (v2)
    embedding: Optional[np.ndarray] = None  # (N, D) float32, input embedding of each row (v2)
    embedding_kind: str = ""  # its name, e.g. "patchnorm4" (engines.embedding); "" = none
    data_sha256: str = ""  # SHA-256 of the profiled inputs' bytes ("" = not recorded)

    @property
    def num_classes(self) -> Optional[int]:
        """C, from the logits (None for a profile without logits)."""
        return None if self.logits is None else int(self.logits.shape[2])

    @property
    def early_exit_stages(self) -> Tuple[int, ...]:
        """Stages with an early-exit head (every head but the final one)."""
        return self.exit_stages[:-1]

    @property
    def num_samples(self) -> int:
        return int(self.confidence.shape[0])

    def validate(self) -> "ExitProfile":
        """Raise ``UsageError`` unless the arrays and stage list are consistent."""
        k = len(self.exit_stages)
        if k < 1 or self.exit_stages[-1] != self.num_stages:
            raise UsageError("exit profile: the last exit stage must be the final stage %d, got %r"
                             % (self.num_stages, self.exit_stages))
        if list(self.exit_stages) != sorted(set(self.exit_stages)) or self.exit_stages[0] < 1:
            raise UsageError("exit profile: exit_stages must be ascending 1-based stages, got %r"
                             % (self.exit_stages,))
        if self.confidence.ndim != 2 or self.confidence.shape[1] != k:
            raise UsageError("exit profile: confidence must have shape (N, %d), got %r"
                             % (k, self.confidence.shape))
        if self.correct.shape != self.confidence.shape:
            raise UsageError("exit profile: correct has shape %r, confidence %r"
                             % (self.correct.shape, self.confidence.shape))
        if self.num_samples == 0:
            raise UsageError("exit profile: no samples")
        if not np.all((self.confidence >= 0.0) & (self.confidence <= 1.0)):  # NaN fails too
            raise UsageError("exit profile: confidences must be in [0, 1] (a softmax maximum)")
        self._validate_v2()
        return self

    def _validate_v2(self) -> None:
        """Shapes of the optional fields; logits agree with confidence and (with labels)
        with correct."""
        n, k = self.confidence.shape
        if self.logits is not None and (self.logits.ndim != 3 or self.logits.shape[:2] != (n, k)
                                        or self.logits.shape[2] < 2):
            raise UsageError("exit profile: logits must have shape (%d, %d, C >= 2), got %r"
                             % (n, k, self.logits.shape))
        if self.label is not None and self.label.shape != (n,):
            raise UsageError("exit profile: label must have shape (%d,), got %r"
                             % (n, self.label.shape))
        if self.embedding is not None:
            if self.embedding.ndim != 2 or self.embedding.shape[0] != n:
                raise UsageError("exit profile: embedding must have shape (%d, D), got %r"
                                 % (n, self.embedding.shape))
            if not self.embedding_kind:
                raise UsageError("exit profile: an embedding needs its embedding_kind")
        if self.logits is None:
            return
        for col in range(k):
            conf, cls = softmax_confidence(self.logits[:, col, :])
            worst = float(np.max(np.abs(conf - self.confidence[:, col])))
            if not worst <= CONFIDENCE_TOLERANCE:
                raise UsageError("exit profile: head %d: max softmax(logits) differs from "
                                 "confidence by %.3g (> %g)"
                                 % (self.exit_stages[col], worst, CONFIDENCE_TOLERANCE))
            if self.label is not None and not np.array_equal(cls == self.label,
                                                             self.correct[:, col]):
                bad = int(np.sum((cls == self.label) != self.correct[:, col]))
                raise UsageError("exit profile: head %d: argmax(logits) == label disagrees with "
                                 "correct on %d row(s)" % (self.exit_stages[col], bad))


def thresholds_vector(profile: ExitProfile, thresholds: Thresholds) -> np.ndarray:
    """Normalise thresholds to one value per early exit, in ``early_exit_stages`` order.

    Accepts a mapping ``{stage: c}`` (every early-exit stage must be present) or a sequence with
    one value per early exit.
    """
    stages = profile.early_exit_stages
    if isinstance(thresholds, Mapping):
        missing = [s for s in stages if s not in thresholds and str(s) not in thresholds]
        if missing:
            raise UsageError("thresholds: no value for exit stage(s) %s" % missing)
        vals = [thresholds[s] if s in thresholds else thresholds[str(s)] for s in stages]
    else:
        vals = list(thresholds)
        if len(vals) != len(stages):
            raise UsageError("thresholds: expected %d values (exit stages %s), got %d"
                             % (len(stages), list(stages), len(vals)))
    return np.asarray(vals, dtype=np.float64)


def exit_index(profile: ExitProfile, thresholds: Thresholds) -> np.ndarray:
    """For each sample, the column of the head it leaves at under ``thresholds``."""
    c = thresholds_vector(profile, thresholds)
    n, k = profile.confidence.shape
    leaves = np.zeros((n, k), dtype=bool)
    if k > 1:
        # vectorised form of should_exit(): confidence >= threshold
        leaves[:, :-1] = profile.confidence[:, :-1] >= c[None, :]
    leaves[:, -1] = True
    return leaves.argmax(axis=1)


@dataclass(frozen=True)
class ExitStats:
    """What a threshold setting yields on the profile."""

    accuracy: float  # A(C): fraction of samples answered correctly
    remaining: np.ndarray  # (H,) I_h: fraction of tasks entering stage h that continue past it
    exit_fraction: np.ndarray  # (K,) fraction of all tasks leaving at each head


def exit_stats(profile: ExitProfile, thresholds: Thresholds) -> ExitStats:
    """Accuracy and per-stage continuation ratios for ``thresholds``, from the profile alone."""
    idx = exit_index(profile, thresholds)
    n, k = profile.confidence.shape
    accuracy = float(profile.correct[np.arange(n), idx].mean())
    counts = np.bincount(idx, minlength=k)
    remaining = np.ones(profile.num_stages, dtype=np.float64)
    entering = n
    for col, stage in enumerate(profile.exit_stages[:-1]):
        # a stage nobody reaches keeps I_h = 1: no exit happens there
        if entering > 0:
            remaining[stage - 1] = (entering - counts[col]) / entering
        entering -= counts[col]
    return ExitStats(accuracy=accuracy, remaining=remaining, exit_fraction=counts / float(n))


def save_exit_profile(path, profile: ExitProfile) -> None:
    """Write ``profile`` to an ``.npz`` file (format version ``FORMAT_VERSION``)."""
    profile.validate()
    arrays = dict(
        format_version=np.int64(FORMAT_VERSION),
        num_stages=np.int64(profile.num_stages),
        exit_stages=np.asarray(profile.exit_stages, dtype=np.int64),
        confidence=profile.confidence.astype(np.float64),
        correct=profile.correct.astype(bool),
        synthetic=np.bool_(profile.synthetic),
        note=np.asarray(profile.note),
    )
    for key, dtype in _OPTIONAL_ARRAYS:
        if getattr(profile, key) is not None:
            arrays[key] = np.asarray(getattr(profile, key), dtype=dtype)
    for key in _OPTIONAL_STRINGS:
        if getattr(profile, key):
            arrays[key] = np.asarray(getattr(profile, key))
    np.savez_compressed(path, **arrays)


# format 2's optional fields and their stored dtypes
_OPTIONAL_ARRAYS = (("logits", np.float32), ("label", np.int64), ("embedding", np.float32))
_OPTIONAL_STRINGS = ("embedding_kind", "data_sha256")


def _whole(a: np.ndarray) -> bool:
    """Integers, or floats that are whole numbers (what ``int`` keeps unchanged)."""
    if a.dtype.kind in "iu":
        return True
    return a.dtype.kind == "f" and bool(np.all(np.isfinite(a) & (a == np.round(a))))


def _field(z: Mapping[str, np.ndarray], key: str, where: str, kind: str) -> np.ndarray:
    """Array ``key`` of the file, checked: ``kind`` is ``int`` (one whole number), ``ints``
    (a 1-D list of whole numbers), ``flag`` (one bool or 0/1), ``flags`` (bools or 0/1 values),
    ``text`` (one string) or ``array`` (numbers)."""
    if key not in z:
        raise UsageError("%s: not a valid exit profile (no %s array)" % (where, key))
    a = np.asarray(z[key])
    scalar = kind in ("int", "flag", "text")
    if (a.ndim != 0) if scalar else (a.ndim == 0 or (kind == "ints" and a.ndim != 1)):
        raise UsageError("%s: %s must be %s, got shape %r"
                         % (where, key, "a single value" if scalar else
                            "a list" if kind == "ints" else "an array", a.shape))
    if kind == "text":
        ok = a.dtype.kind == "U"
    elif kind in ("flag", "flags"):
        ok = a.dtype.kind == "b" or (a.dtype.kind in "iuf" and bool(np.all((a == 0) | (a == 1))))
    elif kind in ("int", "ints"):
        ok = _whole(a)
    else:
        ok = a.dtype.kind in "iufb"
    if not ok:
        raise UsageError("%s: %s must hold %s, got %s" % (where, key, {
            "text": "text", "flag": "true/false (or 0/1)", "flags": "true/false (or 0/1) values",
            "int": "a whole number", "ints": "whole numbers", "array": "numbers"}[kind],
            a.tolist() if a.size <= 4 else "dtype %s" % a.dtype.name))
    return a


def load_exit_profile(path) -> ExitProfile:
    """Read an exit profile written by ``save_exit_profile``; bad files raise ``UsageError``
    naming the file and the fault (every field's type is checked: nothing is cast silently)."""
    from engines.npzfile import load_npz

    where = "exit profile: %s" % (path,)
    z = load_npz(path, "exit profile")
    version = int(_field(z, "format_version", where, "int"))
    if version not in READABLE_VERSIONS:
        raise UsageError("%s: exit profile format %d, this version reads %s"
                         % (path, version, ", ".join(map(str, READABLE_VERSIONS))))
    extra = {}  # type: dict
    if version >= 2:
        extra = {key: _field(z, key, where, "ints" if dtype == np.int64 else "array")
                 .astype(dtype) for key, dtype in _OPTIONAL_ARRAYS if key in z}
        extra.update({key: str(_field(z, key, where, "text"))
                      for key in _OPTIONAL_STRINGS if key in z})
    try:
        profile = ExitProfile(
            num_stages=int(_field(z, "num_stages", where, "int")),
            exit_stages=tuple(int(s) for s in _field(z, "exit_stages", where, "ints")),
            confidence=_field(z, "confidence", where, "array").astype(np.float64),
            correct=_field(z, "correct", where, "flags").astype(bool),
            synthetic=bool(_field(z, "synthetic", where, "flag")),
            note=str(_field(z, "note", where, "text")),
            **extra
        )
    except (ValueError, OverflowError) as exc:  # e.g. a number past float64's range
        raise UsageError("%s: not a valid exit profile (%s)" % (where, exc)) from None
    return profile.validate()
