"""The messages a client exchanges with a source's client endpoint: the TASK frames of one
input (``task_frames``), the largest message a source takes (``message_limit``) and the
``Answer`` read from its RESULT (``parse_answer``; ``no_answer`` for an input nothing came back
for). Pure: no socket here (``agent.fleet.client`` sends and waits), only the wire contract
(``agent.protocol.wire``) and the node config's default limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import msgpack
import numpy as np

from agent.protocol import wire
from agent.protocol.text import printable

OUTCOMES = wire.OUTCOMES


@dataclass(frozen=True)
class Answer:
    """The fate of one input sent to a source."""

    id: str  # the client's task id
    outcome: str  # completed | rejected | lost | error
    reason: str  # "" when completed; else the source's reason or "no answer within N s"
    cls: int  # predicted class (-1 when not completed)
    confidence: float  # max-softmax confidence of the answering exit (0.0 when not completed)
    exit_stage: int  # stage whose exit answered (0 when not completed)
    delay_s: float  # send to answer on the client's clock (the timeout when none came)
    detail: str = ""  # the source's explanation of a refused input ("" when it gave none)
    retry_s: Optional[float] = None  # rejected: seconds to wait before sending it again

    @property
    def ok(self) -> bool:
        """The input was classified."""
        return self.outcome == "completed"


def parse_answer(frames: List[Any], sent_at: Dict[str, float], now: float) -> Optional[Answer]:
    """The ``Answer`` in a source's reply, or None for anything that is not a RESULT of ours.

    Lenient: a RESULT without ``outcome`` is "completed" (sources before the field existed),
    and fields a newer source adds are ignored.
    """
    try:
        header = msgpack.unpackb(bytes(memoryview(frames[0])), raw=False)
    except Exception:  # junk from the socket: not an answer
        return None
    if (not isinstance(header, dict) or header.get("v") != wire.VERSION
            or header.get("k") != int(wire.Kind.RESULT) or header.get("id") not in sent_at):
        return None
    tid = header["id"]
    outcome = header.get("outcome") or "completed"
    outcome = outcome if outcome in OUTCOMES else "error"
    done = outcome == "completed"
    retry = header.get("retry_s")
    retry = float(retry) if type(retry) in (int, float) and 0 <= retry < math.inf else None
    return Answer(tid, outcome, printable(header.get("reason")),
                  int(header.get("cls", -1)) if done else -1,
                  float(header.get("confidence", 0.0)) if done else 0.0,
                  int(header.get("exit_stage", 0)) if done else 0,
                  now - sent_at.pop(tid), printable(header.get("detail")), retry)


def no_answer(tid: str, timeout_s: float, not_sent: str = "") -> Answer:
    """The answer of an input nothing came back for (``not_sent``: why it was not sent)."""
    if not_sent:
        return Answer(tid, "lost", "not sent", -1, 0.0, 0, 0.0, not_sent)
    return Answer(tid, "lost", "no answer within %g s" % timeout_s, -1, 0.0, 0, timeout_s)


def task_frames(x: np.ndarray, tid: str, source: str) -> List[Any]:
    """The TASK frames for one input, sent as given (a source takes a batch of one: shape
    ``(1,) + its replay rows' shape``, else it answers ``error`` / ``bad_input``)."""
    x = np.ascontiguousarray(x)
    fields = {"id": tid, "source": source, "stage": 1, "attempt": 0, "created": time.time(),
              "hops": 0, "resends": 0}
    return wire.encode(wire.Kind.TASK, source, fields, [x])


def message_limit(given: Optional[int] = None) -> int:
    """The source's limit on one message: ``given``, else NodeConfig's ``max_message_bytes``."""
    from agent.config.node import DEFAULT_MAX_MESSAGE_BYTES
    if given is None:
        return DEFAULT_MAX_MESSAGE_BYTES
    if isinstance(given, int) and given > 0:
        return given
    raise ValueError("max_message_bytes must be a whole number of bytes > 0, got %r" % (given,))

