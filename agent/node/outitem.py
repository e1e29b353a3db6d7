"""What the outbox holds in custody: one task or result until the next hop ACKs it, and the
RESULTS messages its results go back in."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from agent.net.frames import can_send
from agent.net.links import message_wire_bytes
from agent.protocol import wire
from agent.protocol.wire import Kind

# a stage's messages come in a few sizes: numpy per call costs ~5 us per ACKed item
wire_bytes_of = functools.lru_cache(maxsize=256)(message_wire_bytes)
_next_seq = itertools.count().__next__  # ages of items, in the order they are made


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
    # monotonic time a link nothing paces is expected to have carried its last send
    # (``agent.node.linkclock``; the send's time at an unknown rate; 0: paced, or not sent)
    link_end: float = 0.0
    expires: float = 0.0  # monotonic time its source gives up on it (0: never; results)
    # a result is re-sent until then whatever its count of re-sends: its one destination, the
    # source, may be restarting (a fresh process takes a while to be reachable again)
    keep_until: float = 0.0
    conn: int = -1  # the destination's data connection it was sent on (transport.data_drops)
    # its age: made before every item of a higher seq (held tasks wait in this order, whenever
    # each was sent, refused or sent again: ``outqueue.hold``)
    seq: int = field(default_factory=_next_seq)
    # an escalation's answer at this node (``worker_tier``), called with the monotonic time
    # instead of holding the task once no successor of its stage is alive (``out_takeback``);
    # it returns False when the policy answers nothing here (the task is then held)
    takeback: Optional[Callable[[float], bool]] = None

    @property
    def nbytes(self) -> int:
        """Tensor bytes this item holds."""
        return 0 if self.tensor is None else self.tensor.nbytes


_TASK = Kind.TASK
_set, _del, _pop = dict.__setitem__, dict.__delitem__, dict.pop


class Custody(dict):
    """The outbox's items by key, the tasks among them counted as they come and go.

    A worker checks its queue bounds on every TASK it takes (``Outbox.held``): a scan of every
    item in custody there cost time in proportion to the queue, on each intake. An item's kind
    and tensor do not change while it is held, so the counts stay exact whichever of the dict's
    ways (``[]=``, ``del``, ``pop``) puts an item in or takes it out.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tasks = 0  # TASK items held
        self.task_bytes = 0  # their tensor bytes
        self.task_wire_bytes = 0.0  # and what they take on the links, framing included

    def __setitem__(self, key: str, item: OutItem) -> None:
        old = self.get(key)
        if old is not None and old.kind is _TASK:
            self.tasks -= 1
            self.task_bytes -= old.nbytes
            self.task_wire_bytes -= wire_bytes_of(old.nbytes)
        _set(self, key, item)
        if item.kind is _TASK:
            self.tasks += 1
            self.task_bytes += item.nbytes
            self.task_wire_bytes += wire_bytes_of(item.nbytes)

    def __delitem__(self, key: str) -> None:
        item = self[key]
        _del(self, key)
        if item.kind is _TASK:
            self.tasks -= 1
            self.task_bytes -= item.nbytes
            self.task_wire_bytes -= wire_bytes_of(item.nbytes)

    def pop(self, key: str, *default: Any) -> Any:
        """``dict.pop``, counted."""
        item = _pop(self, key, *default)
        if isinstance(item, OutItem) and item.kind is _TASK:
            self.tasks -= 1
            self.task_bytes -= item.nbytes
            self.task_wire_bytes -= wire_bytes_of(item.nbytes)
        return item

    def fits(self, rate_maps: Any, seconds: float) -> bool:
        """True when all the tasks held would cross the slowest positive rate of ``rate_maps``
        (each peer -> bytes/s) within ``seconds`` (no rate: True); then no one link can hold
        more than that."""
        rates = [r for m in rate_maps for r in m.values() if r > 0]
        return not rates or self.task_wire_bytes <= min(rates) * seconds

    def _closed(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Custody keeps its counts through []=, del and pop only")

    # the dict's other ways in and out would bypass the counts
    update = setdefault = popitem = clear = _closed  # type: ignore[assignment]


def result_batches(sender: str, items: Sequence[OutItem], limit_bytes: int
                   ) -> Iterator[Tuple[Sequence[OutItem], List[Any]]]:
    """The RESULTS messages that carry ``items`` (results for one source) in order, each with
    its results: at most ``wire.MAX_BATCH`` results and ``limit_bytes`` a message, nor more
    than a receiver decodes as one header (``wire.MAX_HEADER_BYTES``: a RESULTS message is all
    header). A longer message is split in halves until it fits (128 results with the widest
    ids and tokens take about 70 KB, and ``max_message_bytes`` may be as low as 1 KiB); one
    result alone goes as it is (the widest takes under 700 bytes)."""
    limit_bytes = min(limit_bytes, wire.MAX_HEADER_BYTES)
    todo = [items[i:i + wire.MAX_BATCH] for i in range(0, len(items), wire.MAX_BATCH)][::-1]
    while todo:
        part = todo.pop()
        frames = wire.encode(Kind.RESULTS, sender, {"items": [it.fields for it in part]})
        if len(part) > 1 and wire.frames_nbytes(frames) > limit_bytes:
            half = len(part) // 2
            todo += [part[half:], part[:half]]  # the first half goes next: the order is kept
            continue
        yield part, frames


def cut_off_from(source: str, sender: str, view: Any, out: Any, sources: Any = ()) -> bool:
    """True when a worker's results cannot go back to ``source`` now and more tasks of it would
    only wait here for their deadline: the source was heard and is gone (``view``), the task did
    not come from it directly (a task sent by the source is proof it is back), this node has no
    data connection to it (``out.transport``'s DEALER; a restarted source's comes back within
    a reconnect interval) and results to it are already held here undelivered (``out.items``:
    a source just restarted has none waiting, so its first tasks are not refused). Never while
    another of the worker's ``sources`` is alive: the refusal names the source
    (``refusal_scope``), but a sender that does not know that field holds this worker off for
    every source's tasks, which would cost the sources still reached their only route."""
    if source in view.alive or source not in view.peer_state or sender == source:
        return False
    if any(s in view.alive for s in sources if s != source):
        return False
    if can_send(out.transport.dealers.get(source)):
        return False
    return any(i.kind == Kind.RESULT and i.dest == source for i in out.items.values())
