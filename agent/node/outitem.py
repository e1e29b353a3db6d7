"""What the outbox holds in custody: one task or result until the next hop ACKs it."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from agent.net.links import message_wire_bytes
from agent.protocol.wire import Kind

# a stage's messages come in a few sizes: numpy per call costs ~5 us per ACKed item
wire_bytes_of = functools.lru_cache(maxsize=256)(message_wire_bytes)


@dataclass
class OutItem:
    """A task or result held until the next hop ACKs it."""

    kind: Kind
    key: str
    fields: Dict[str, Any]
    tensor: Optional[np.ndarray]
    dest: str = ""
    tried: List[str] = field(default_factory=list)
    resends: int = 0
    deadline: float = 0.0
    link_start: float = 0.0  # monotonic time its last send began on the link (0: not sent)
    expires: float = 0.0  # monotonic time its source gives up on it (0: never; results)
    # a result is re-sent until then whatever its count of re-sends: its one destination, the
    # source, may be restarting (a fresh process takes a while to be reachable again)
    keep_until: float = 0.0
    conn: int = -1  # the destination's data connection it was sent on (transport.data_drops)

    @property
    def nbytes(self) -> int:
        """Tensor bytes this item holds."""
        return 0 if self.tensor is None else self.tensor.nbytes
