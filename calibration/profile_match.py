"""How a calibration profile entry is found: the one home of the matching rule.

An entry matches when its whole key -- (board, L4T release, power mode, stage sha256, backend,
precision), ``ProfileEntry.key()`` -- equals the one asked for. ``lookup_capacity`` finds an
engine's entry with ``find_entry``; ``unmatched_part`` says, for a key that finds none, which
part no entry has (``edge-agent doctor`` reports it, so a profile of another bundle, board or
release is seen for what it is).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

# the parts of an entry's key, in ``ProfileEntry.key()`` order, as a report names them
KEY_PARTS = ("board", "L4T release", "mode", "stage hash", "backend", "precision")


def find_entry(profile: Any, board: str, l4t: str, power_mode: str, stage_sha256: str,
               backend: str, precision: str) -> Optional[Any]:
    """The entry of ``profile`` with exactly this key, or None."""
    key = (board, l4t, power_mode, stage_sha256, backend, precision)
    for entry in profile.entries:
        if entry.key() == key:
            return entry
    return None


def narrowed(profile: Any, key: Sequence[str]) -> Tuple[Optional[int], List[Any]]:
    """(index of the first part of ``key`` -- a whole key, or its first parts only -- that no
    entry matching every earlier part has, the entries matching every earlier part); (None,
    the entries matching it all) when some do."""
    left = list(profile.entries)
    for i, want in enumerate(key):
        match = [e for e in left if e.key()[i] == want]
        if not match:
            return i, left
        left = match
    return None, left


def unmatched_part(profile: Any, key: Sequence[str]) -> Optional[str]:
    """The first part of ``key`` that no entry matching every earlier part has (``narrowed``),
    as named in ``KEY_PARTS``; None when an entry matches it all. E.g. "L4T release": entries
    of this board, all measured under another release."""
    i, _ = narrowed(profile, key)
    return None if i is None else KEY_PARTS[i]
