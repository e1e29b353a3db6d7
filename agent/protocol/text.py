"""A text field that came over the network, as a terminal or a summary line may show it.

A source's ``reason`` and ``detail`` reach clients, the testbed's records and ``report``'s
lines: one home for how they are shown, so every reader cuts and cleans them alike. One
detail is also read back, a refusal of an input's dtype or shape: every input of a client's
file would get it, so ``submit`` stops at the first (``input_refusal`` writes it,
``parse_input_refusal`` reads it).
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Tuple

DETAIL_MAX_CHARS = 300  # a source's reason or detail is cut to this (a line on a terminal)


def printable(value: Any) -> str:
    """``value`` as one line of printable characters (a terminal must not take escape codes
    from the network), at most ``DETAIL_MAX_CHARS``; "" for nothing, a map or a list."""
    if not value or isinstance(value, (dict, list)):
        return ""
    return "".join(c if c.isprintable() else "?" for c in str(value)[:DETAIL_MAX_CHARS])


_INPUT_REFUSAL = re.compile(r"^input (\w+) \(([\d, ]*)\); stage 1 takes (\w+) \(([\d, ]*)\)$")


def input_refusal(dtype: str, shape: Sequence[int], want_dtype: str,
                  want_shape: Sequence[int]) -> str:
    """A source's detail for an input of another dtype or shape than stage 1 takes:
    ``input uint8 (1, 28, 28); stage 1 takes float32 (1, 1, 28, 28)``."""
    return "input %s %s; stage 1 takes %s %s" % (dtype, tuple(shape), want_dtype,
                                                  tuple(want_shape))


def parse_input_refusal(detail: str) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """(dtype, shape of one input, without the batch axis) stage 1 takes, when ``detail`` is an
    ``input_refusal``; else None."""
    m = _INPUT_REFUSAL.match(detail or "")
    if not m:
        return None
    return m.group(3), tuple(int(d) for d in m.group(4).split(",") if d.strip())[1:]
