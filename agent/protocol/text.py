"""A text field that came over the network, as a terminal or a summary line may show it.

A source's ``reason`` and ``detail`` reach clients, the testbed's records and ``report``'s
lines: one home for how they are shown, so every reader cuts and cleans them alike.
"""

from __future__ import annotations

from typing import Any

DETAIL_MAX_CHARS = 300  # a source's reason or detail is cut to this (a line on a terminal)


def printable(value: Any) -> str:
    """``value`` as one line of printable characters (a terminal must not take escape codes
    from the network), at most ``DETAIL_MAX_CHARS``; "" for nothing, a map or a list."""
    if not value or isinstance(value, (dict, list)):
        return ""
    return "".join(c if c.isprintable() else "?" for c in str(value)[:DETAIL_MAX_CHARS])
