"""How a calibration profile entry is found: the one home of the matching rule.

An entry's key is (board, L4T release, power mode, stage sha256, backend, precision, engine
threads), ``ProfileEntry.key()``. The thread count is part of it only where threads change the
speed: onnxruntime on the CPU (``entry_threads``); TensorRT and onnxruntime's GPU providers
ignore intra-op threads, so their entries carry None there and serve any ``engine_threads``.
Entries measured with different thread counts live side by side. A CPU entry whose ``engine``
records no thread count (written by hand, or by a build that did not record it) also carries
None: it serves any thread count, and ``lookup_capacity`` logs a WARNING when it uses one.

``find_entry`` finds an engine's entry (``lookup_capacity`` and ``edge-agent doctor`` use it);
``narrowed`` and ``unmatched_part`` say, for a key that finds none, which part no entry has, so
a profile of another bundle, board, release or thread count is seen for what it is.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

# the parts of an entry's key, in ``ProfileEntry.key()`` order, as a report names them
KEY_PARTS = ("board", "L4T release", "mode", "stage hash", "backend", "precision", "threads")
THREADS = len(KEY_PARTS) - 1  # index of the thread count in a key


def cpu_entry(entry: Any) -> bool:
    """True for an entry measured with onnxruntime on the CPU (its ``engine`` info's device;
    an entry without one counts as CPU), where the engine's thread count sets its speed."""
    engine = entry.engine if isinstance(entry.engine, dict) else {}
    return entry.backend == "onnxruntime" and engine.get("device", "CPU") == "CPU"


def entry_threads(entry: Any) -> Optional[int]:
    """The engine thread count ``entry`` was measured with, where it matters (``cpu_entry``);
    None for TensorRT and GPU providers, and for a CPU entry that records none."""
    if not cpu_entry(entry):
        return None
    threads = entry.engine.get("threads")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        return None  # 0 is onnxruntime's own default: no count either
    return threads


def _part_matches(entry: Any, i: int, want: Any) -> bool:
    """Whether ``entry`` matches part ``i`` of a key: equality, except for the thread count,
    where None asked (the caller does not say) or None held (``entry_threads``) matches any."""
    if i != THREADS:
        return entry.key()[i] == want
    return want is None or entry_threads(entry) in (None, want)


def narrowed(profile: Any, key: Sequence[Any]) -> Tuple[Optional[int], List[Any]]:
    """(index of the first part of ``key`` -- a whole key, or its first parts only -- that no
    entry matching every earlier part has, the entries matching every earlier part); (None,
    the entries matching it all) when some do."""
    left = list(profile.entries)
    for i, want in enumerate(key):
        match = [e for e in left if _part_matches(e, i, want)]
        if not match:
            return i, left
        left = match
    return None, left


def find_entry(profile: Any, board: str, l4t: str, power_mode: str, stage_sha256: str,
               backend: str, precision: str, threads: Optional[int] = None) -> Optional[Any]:
    """The entry of ``profile`` for this key, or None. ``threads``: the engine's thread count;
    an entry measured with exactly that many wins over one that records none (TensorRT, a GPU
    provider, an older CPU entry). None (a caller that does not say) takes the entry at 1
    thread, the ``engine_threads`` default, else one recording none, else any."""
    i, left = narrowed(profile, (board, l4t, power_mode, stage_sha256, backend, precision,
                                 threads))
    if i is not None:
        return None
    for wanted in ((threads,) if threads is not None else (1,)) + (None,):
        for entry in left:
            if entry_threads(entry) == wanted:
                return entry
    return left[0]


def unmatched_part(profile: Any, key: Sequence[Any]) -> Optional[str]:
    """The first part of ``key`` that no entry matching every earlier part has (``narrowed``),
    as named in ``KEY_PARTS``; None when an entry matches it all. E.g. "L4T release": entries
    of this board, all measured under another release."""
    i, _ = narrowed(profile, key)
    return None if i is None else KEY_PARTS[i]
