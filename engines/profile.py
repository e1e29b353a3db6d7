"""Measure a bundle's exit profile: every sample through every stage once (batch 1).

The per-sample loop uses the same engines and batch size as serving, so confidences are
exactly those the agent will see; the accuracy table is then computed from the profile alone
(``engines.exit_profile.exit_stats``). The profile (format 2) also keeps every head's logits,
the labels, an input embedding per sample (``engines.embedding``) and the SHA-256 of the
profiled inputs, so row i stays tied to sample i of the data file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable, Optional, Tuple

import numpy as np

from agent.errors import UsageError
from agent.ops.files import check_regular_file
from engines.npzfile import load_npz
from engines.bundle import Bundle
from engines.loader import load_engine
from engines.embedding import CHOICES as EMBEDDING_CHOICES, auto_kind, embed_as_stored, kind_name
from engines.exit_profile import ExitProfile, probabilities_problem, softmax_confidence

log = logging.getLogger("engines.profile")

# Values are far from a reference range when they reach beyond it widened on each side by a
# number of times its width or its largest magnitude, whichever is more (a near-constant
# reference still leaves room). One input spans less than a whole set, so it gets a wide margin
# against the replay set (0-255 images where the model takes [0, 1] are still caught); a whole
# set against the model's training inputs gets a tight one, so that a set on another scale
# (ImageNet-normalised against [0, 1]) is caught too. The other way round, training inputs
# beyond the set, a set may well be narrower (a few rows, dark frames): only a far wider
# training range (0-255 against [0, 1]), or training inputs normalised around 0 reaching
# below it by more than the set's magnitude while the set has no negative value, tell of
# another scale.
INPUT_RANGE_WIDTHS = 4.0
SET_RANGE_WIDTHS = 1.0
TRAINED_RANGE_WIDTHS = 10.0
# training inputs reaching below 0 by half the set's magnitude, the set never below 0: centred
# on 0 there ((x - 0.5) / 0.5 gives [-1, 1] for a [0, 1] set), not here
CENTRED_WIDTHS = 0.5


def load_dataset(path, scale_uint8: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``x`` (N, ...) and integer labels ``y`` (N,) from an ``.npz``; uint8 images are
    scaled to float32 in [0, 1] unless ``scale_uint8`` is false (then ``as_input`` does it once
    the model's input dtype is known)."""
    path = os.fspath(path)
    check_regular_file(path, "--data")  # missing, or a folder: said as such
    z = load_npz(path, "--data")
    if "x" not in z or "y" not in z:
        raise UsageError("--data: %s: expected arrays 'x' and 'y', found %s" % (path, sorted(z)))
    x, y = z["x"], z["y"]
    if x.ndim == 0 or x.dtype.kind not in "biuf":
        raise UsageError("--data: %s: x must be an array of numbers, one row per sample, "
                         "got %s %s" % (path, x.dtype, x.shape))
    if len(x) == 0:
        raise UsageError("--data: %s: x holds no samples (0 rows); labelled samples are needed" % path)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise UsageError("--data: %s: x holds NaN or infinite values" % path)
    if scale_uint8 and x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    if y.ndim != 1 or len(y) != len(x) or len(y) == 0 or not np.issubdtype(y.dtype, np.integer):
        raise UsageError("--data: %s: y must be N integer labels matching x's %d rows, got %s %s"
                         % (path, len(x), y.dtype, y.shape))
    return x, y.astype(np.int64)


def as_input(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` as a model input of numpy ``dtype`` takes it: uint8 images scaled to [0, 1] for a
    floating-point input, anything else cast as it is (a uint8 input gets the bytes)."""
    if x.dtype == np.uint8 and np.dtype(dtype).kind == "f":
        x = x.astype(np.float32) / np.float32(255.0)
    return x.astype(dtype, copy=False)


def beyond_range(ref: Tuple[float, float], lo: float, hi: float, widths: float) -> bool:
    """Whether values spanning [``lo``, ``hi``] reach beyond the range ``ref`` widened on each
    side by ``widths`` times max(its width, |its ends|); False when ``ref`` is all zero (no scale
    to compare with)."""
    ref_lo, ref_hi = ref
    margin = widths * max(ref_hi - ref_lo, abs(ref_lo), abs(ref_hi))
    return margin > 0 and (lo < ref_lo - margin or hi > ref_hi + margin)


def unscaled_hint(ref_hi: float, lo: float, hi: float) -> str:
    """The usual fix when values in [``lo``, ``hi``], none negative, reach up to 255 where the
    reference stays within 1: images stored as bytes and never scaled."""
    return " (images stored as 0-255? x / 255)" if 0.0 <= lo and ref_hi <= 1.0 < hi <= 255.0 else ""


def set_range_problem(data: Tuple[float, float], trained: Tuple[float, float]) -> str:
    """Why a data set whose values span ``data`` is on another scale than the model's training
    inputs, which spanned ``trained`` (the bundle's stage-1 ``input.value_range``): "" when
    the set stays within the training range widened by ``SET_RANGE_WIDTHS`` and the training
    range within the set's widened by ``TRAINED_RANGE_WIDTHS``, unless the training inputs were
    centred on 0 and the set is not (the module's comment on the margins)."""
    (lo, hi), (t_lo, t_hi) = data, trained
    centred = t_lo < 0.0 <= lo and -t_lo >= CENTRED_WIDTHS * max(hi - lo, abs(hi))
    if not (beyond_range(trained, lo, hi, SET_RANGE_WIDTHS) or centred
            or beyond_range(data, t_lo, t_hi, TRAINED_RANGE_WIDTHS)):
        return ""
    hint = unscaled_hint(t_hi, lo, hi) or (" (training images were 0-255? x * 255)"
                                           if 0.0 <= t_lo and hi <= 1.0 < t_hi <= 255.0 else "")
    if not hint and t_lo < 0.0 <= lo:
        hint = " (the training inputs were normalised: (x - mean) / std as there?)"
    elif not hint and lo < 0.0 <= t_lo:
        hint = " (normalised here, the training inputs were not?)"
    return ("values in [%.4g, %.4g], far from the [%.4g, %.4g] of the model's training inputs "
            "(the bundle's stage 1 input.value_range): scale the set as the training inputs "
            "were%s" % (lo, hi, t_lo, t_hi, hint))


def check_set_range(x: np.ndarray, trained: Optional[Tuple[float, float]], where: str,
                    consequence: str, logger: logging.Logger = log) -> str:
    """Log one WARNING (on ``logger``) when the data set ``x`` (as stage 1 is fed it) is on
    another scale than the model's training inputs (``set_range_problem``), ``where`` naming
    the file and ``consequence`` what happens now; returns the warning ("" when none). Only
    float inputs are compared, and only with a bundle that recorded its range."""
    if trained is None or x.dtype.kind != "f" or not x.size:
        return ""
    why = set_range_problem((float(x.min()), float(x.max())), trained)
    if why:
        why = "%s: %s; %s" % (where, why, consequence)
        logger.warning("%s", why)
    return why


def profile_embedding(x: np.ndarray, embedding: str = "auto") -> Tuple[Optional[np.ndarray], str]:
    """The input embedding the profile stores for ``x`` and its kind name; ``embedding`` is one
    of ``engines.embedding.CHOICES`` (``auto`` picks by the input's shape, ``none`` stores
    nothing: returns ``(None, "")``)."""
    if embedding not in EMBEDDING_CHOICES:
        raise UsageError("--embedding: must be one of %s, got %r"
                         % (", ".join(EMBEDDING_CHOICES), embedding))
    kind = auto_kind(x.shape[1:]) if embedding == "auto" else embedding
    if kind == "none":
        return None, ""
    name = kind_name(kind)
    return embed_as_stored(x, name), name


def profile_bundle(bundle: Bundle, x: np.ndarray, y: np.ndarray, backend: str = "onnxruntime",
                   threads: int = 1, progress: Optional[Callable[[int], None]] = None,
                   embedding: str = "auto", data_path: str = "--data") -> ExitProfile:
    """Run every sample of ``x`` through all stages of ``bundle`` and record every head: its
    confidence, correctness and logits, plus the labels and the input ``embedding`` (see
    ``profile_embedding``). ``x`` on another scale than the model's training inputs (the
    bundle's stage-1 ``input.value_range``) is measured as it is, with one WARNING naming
    ``data_path``."""
    first = bundle.stages[0]
    if tuple(x.shape[1:]) != tuple(first.input_shape[1:]):
        raise UsageError("%s: x has sample shape %s, stage 1 expects %s"
                         % (data_path, tuple(x.shape[1:]), tuple(first.input_shape[1:])))
    x = np.ascontiguousarray(as_input(x, first.input_dtype))
    classes = max((s.num_classes for s in bundle.stages), default=0)
    if classes and (y.min() < 0 or y.max() >= classes):  # every head would read 0% correct
        raise UsageError("%s: y holds labels %d..%d; the bundle's heads have %d classes "
                         "(0..%d)" % (data_path, y.min(), y.max(), classes, classes - 1))
    check_set_range(x, first.input_value_range, data_path,
                    "the profile measures the set as it is, and the accuracies it gives are "
                    "those of that scale")
    emb, emb_kind = profile_embedding(x, embedding)
    engines = [load_engine(s, backend=backend, threads=threads) for s in bundle.stages]
    heads = [s for s in bundle.stages if s.logits_output is not None]
    n = len(x)
    confidence = np.zeros((n, len(heads)), dtype=np.float64)
    correct = np.zeros((n, len(heads)), dtype=bool)
    logits = None
    try:
        for i in range(n):
            t = x[i:i + 1]
            col = 0
            for engine in engines:
                out = engine.run(t)
                if out.logits is not None:
                    if logits is None:
                        logits = np.zeros((n, len(heads), out.logits.size), dtype=np.float32)
                    logits[i, col] = np.asarray(out.logits, dtype=np.float32).reshape(-1)
                    conf, cls = softmax_confidence(logits[i, col])
                    confidence[i, col] = conf[0]
                    correct[i, col] = cls[0] == y[i]
                    col += 1
                t = out.features
            if progress is not None:
                progress(i + 1)
    finally:
        for engine in engines:
            engine.close()
    for col, stage in enumerate(heads):  # before anything is written: every head's own numbers
        wrong = probabilities_problem(logits[:, col] if logits is not None else [],
                                      "stage %d's head %r" % (stage.index, stage.logits_output))
        if wrong:
            raise UsageError(wrong)
    return ExitProfile(num_stages=bundle.num_stages, exit_stages=bundle.exit_stages,
                       confidence=confidence, correct=correct,
                       note="measured on %d samples, batch 1" % n, logits=logits,
                       label=np.asarray(y, dtype=np.int64), embedding=emb,
                       embedding_kind=emb_kind,
                       data_sha256=hashlib.sha256(x.tobytes()).hexdigest()).validate()
