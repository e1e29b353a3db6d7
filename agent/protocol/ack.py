"""An ACK's refusal fields: which tasks a receiver refuses, why, for how long, and whose.

Optional fields of an ACK (``agent.protocol.wire``; absent means the default in brackets)::

    refused  [str] task keys the receiver refuses: its queue is full, it has no route on, or
             none back to their source; the sender re-routes or holds them at once [].
    reason   str   why refused: "overload", "no_route", "shutdown" [""].
    retry_s  float how long the sender should not offer this receiver more [0].
    source   str   the refusal is about this source's tasks alone: the sender holds the
             receiver off for that source's tasks only, and still sends it every other
             source's ("": about every task) [""].

``source`` is optional, so no new protocol version: a sender that does not know it holds the
receiver off for every task, as a refusal without it asks.
"""

from __future__ import annotations

from typing import Any, Dict, List

# the optional ACK fields above and their types (checked on decode like every field)
REFUSAL_FIELDS = {"refused": list, "reason": str, "retry_s": float, "source": str}


def ack_fields(keys: List[str], reason: str = "", retry_s: float = 0.0,
               source: str = "") -> Dict[str, Any]:
    """An ACK's fields: ``keys`` ACKed, or with ``reason`` refused, the sender asked to leave
    the receiver alone for ``retry_s`` for every task, or for ``source``'s tasks alone."""
    if not reason:
        return {"keys": keys}
    out: Dict[str, Any] = {"keys": [], "refused": keys, "reason": reason,
                           "retry_s": float(retry_s)}
    if source:
        out["source"] = source
    return out
