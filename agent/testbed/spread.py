"""How far a run's delays spread: percentiles and the 95% confidence interval of the mean.

One (policy, rate) run is a few seconds of load, so its mean delay moves from one run to the
next; the table gives the mean with the half-width of its 95% confidence interval
(``97.8±6.1``) so that two policies' means can be told apart from noise. Pure functions; no
scipy (the project's core does without it), so Student's t comes from a small table.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

BATCHES = 10  # batches of the batch-means interval
MIN_PER_BATCH = 2  # fewer tasks than this per batch: no interval
# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom (batches - 1)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
         16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093}


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def batch_means_half_width(values: Sequence[float], batches: int = BATCHES) -> Optional[float]:
    """Half-width of the 95% confidence interval of the mean of ``values`` (in their unit), by
    batch means; None with fewer than ``MIN_PER_BATCH`` values per batch.

    ``values`` are the run's task delays in creation order. Why batch means: tasks that follow
    one another share the queues, so a task created behind a long one waits long too, and the
    delays are positively autocorrelated; the plain standard error (sd / sqrt(n)) treats them
    as independent and gives an interval far too narrow. Cut into ``batches`` contiguous
    batches of (nearly) equal size, each a stretch of the run much longer than the queues'
    memory, the batch means are nearly independent, so half-width = t(0.975, batches - 1) x
    sd(batch means, ddof=1) / sqrt(batches). ``ValueError`` for a ``batches`` without a t in
    ``T_975`` (2 to 20).
    """
    k = int(batches)
    t = T_975.get(k - 1)
    if t is None:
        raise ValueError("batches: must be 2 to %d, got %r" % (max(T_975) + 1, batches))
    n = len(values)
    if n < MIN_PER_BATCH * k:
        return None
    means = []
    for i in range(k):
        part = values[i * n // k:(i + 1) * n // k]
        means.append(math.fsum(part) / len(part))
    centre = math.fsum(means) / k
    sd = math.sqrt(math.fsum((m - centre) ** 2 for m in means) / (k - 1))
    return t * sd / math.sqrt(k)


def ms_cell(v_s: Optional[float]) -> str:
    """A delay in the table: milliseconds with one decimal, ``-`` for none."""
    return "-" if v_s is None else "%.1f" % (v_s * 1e3)


def mean_ms_cell(mean_s: Optional[float], half_width_s: Optional[float],
                 plus_minus: str = "±") -> str:
    """The table's ``mean ms`` cell: ``97.8±6.1`` (mean ± the 95% interval's half-width, ms),
    ``12.0±-`` when there is no interval (under ``MIN_PER_BATCH * BATCHES`` tasks), ``-``
    without a mean."""
    if mean_s is None:
        return "-"
    return "%s%s%s" % (ms_cell(mean_s), plus_minus, ms_cell(half_width_s))


def plus_minus_for(stream) -> str:
    """``±``, or ``+-`` where ``stream`` (stdout) cannot encode it (an ASCII-only encoding),
    so printing the table never fails on the sign."""
    try:
        "±".encode(getattr(stream, "encoding", None) or "ascii")
        return "±"
    except (LookupError, UnicodeEncodeError):
        return "+-"
