"""A node's message and queue limits against the tensors it receives: the one rule, checked
before a node starts (``run``, ``doctor --config`` and the testbed's check of every agent all
call ``check_limits``), and the words of a message dropped as oversized while it serves.

What a node receives with a tensor: a worker, a TASK for each stage it serves (``stages``; a
``terminal`` tier, its first stage only); a source with ``arrival = "client"``, its clients'
stage-1 inputs on the client socket (a source otherwise receives only RESULTs and ACKs, which
carry no tensor). For each:

- the whole message (header and tensor) must fit ``max_message_bytes``, or the loop drops
  every such task as ``oversized`` (up to twice the limit) or ZeroMQ cuts the sender's
  connection (above that: nothing is counted or logged). The header is bounded by
  ``task_header_bytes``: the TASK header ``agent.protocol.wire`` encodes for the stage's tensor
  descriptor with every id, token and number at its widest, so a limit that passes holds any
  task of the stage;
- a worker's ``max_queue_bytes`` must hold one input tensor: the worker refuses a task that
  would take its held tensors past it, so a smaller bound refuses every task (``overload``).

A config that fails raises ``LimitError`` (a ``UsageError``: ``run`` exits 78) in one line
naming the node, the stage, the tensor bytes, the limit and the value to raise it to; its
``fix`` is that value as a config line. Where several nodes take their limits from one place
(the testbed's topology), ``largest_need`` picks the error that names the value every node
needs, not the first node checked.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from agent.config.checks import MAX_MESSAGE_BYTES_LIMIT, NODE_ID_MAX_CHARS
from agent.errors import UsageError
from agent.protocol import wire
from agent.protocol.wire import Kind, WireError

# the longest task id and token a header is bounded for: a source's ids are its node id and
# 17 characters and its tokens 16; a client's own ids (on the client socket) are of that order
ID_MAX_CHARS = 2 * NODE_ID_MAX_CHARS


class LimitError(UsageError):
    """A message or queue limit below what the node must receive; ``fix`` says the value,
    ``field`` names the limit and ``need_bytes`` is the least value it may take."""

    def __init__(self, line: str, fix: str, field: str = "", need_bytes: int = 0):
        super().__init__(line)
        self.fix = fix
        self.field = field
        self.need_bytes = need_bytes


def task_header_bytes(shape: Sequence[int], dtype: str, num_classes: int) -> int:
    """Bytes of the largest TASK header that carries a tensor of ``shape`` and ``dtype``: the
    header ``wire.encode`` makes with node ids of ``NODE_ID_MAX_CHARS``, task id and token of
    ``ID_MAX_CHARS``, every integer at its widest and the optional fields present (MLCI's
    running ensemble: one number per class of ``num_classes``)."""
    node = "n" * NODE_ID_MAX_CHARS
    widest = wire.MAX_INT - 1
    fields = {"id": "i" * ID_MAX_CHARS, "source": node, "stage": widest, "attempt": widest,
              "created": 1.0, "hops": widest, "resends": widest, "ttl_s": 1.0,
              "token": "t" * ID_MAX_CHARS, "level": widest,
              "ens": [1.0] * max(int(num_classes), 0), "ens_w": 1.0}
    # an untouched array: its pages are never written, only its descriptor is encoded
    tensor = np.empty(tuple(int(d) for d in shape), dtype=np.dtype(dtype))
    frames = wire.encode(Kind.TASK, node, fields, [tensor], slot=widest, round=widest)
    return memoryview(frames[0]).nbytes


def received_stages(cfg: Any) -> Tuple[int, ...]:
    """The stages whose input ``cfg``'s node receives: a worker's own stages (a ``terminal``
    tier's first alone, as ``worker.WorkerSide`` takes them), a client-fed source's stage 1,
    none for a source that replays its own inputs."""
    if cfg.role == "worker":
        return (cfg.stage,) if cfg.terminal else tuple(range(cfg.stages[0], cfg.stages[1] + 1))
    return (1,) if cfg.arrival == "client" else ()


def needs(cfg: Any, bundle: Any) -> List[Tuple[int, int, int]]:
    """(stage, tensor bytes, largest message bytes) of each stage whose input the node of
    ``cfg`` receives (``received_stages``)."""
    out = []
    for h in received_stages(cfg):
        spec = bundle.stage(h)
        tensor = int(spec.input_bytes)
        header = task_header_bytes(spec.input_shape, spec.input_dtype, bundle.num_classes)
        out.append((h, tensor, tensor + header))
    return out


def _who(cfg: Any) -> str:
    return "%s %s" % (cfg.role, cfg.node_id)


def check_limits(cfg: Any, bundle: Any) -> str:
    """Raise ``LimitError`` unless ``max_message_bytes`` holds the largest message and (a
    worker) ``max_queue_bytes`` one input tensor of every stage the node receives; else one
    line saying what fits."""
    got = needs(cfg, bundle)
    if not got:
        return "receives no tensors (a source replaying its own inputs)"
    h, tensor, message = max(got, key=lambda n: n[2])
    if message > cfg.max_message_bytes:
        if message > MAX_MESSAGE_BYTES_LIMIT:
            raise LimitError(
                "max_message_bytes: %s receives stage-%d inputs of %d tensor bytes (%d bytes "
                "with the largest header), above the most max_message_bytes may be (%d); cut "
                "the model where the tensor is smaller" % (_who(cfg), h, tensor, message,
                                                           MAX_MESSAGE_BYTES_LIMIT),
                "rebuild the bundle with a cut whose tensor is below 1 GiB",
                "max_message_bytes", message)
        raise LimitError(
            "max_message_bytes: %d is below the largest message %s receives (a stage-%d task%s: "
            "%d tensor bytes + up to %d header bytes); every such task would be dropped: raise "
            "max_message_bytes to %d or more" % (
                cfg.max_message_bytes, _who(cfg), h, " from a client" if cfg.role == "source"
                else "", tensor, message - tensor, message),
            "max_message_bytes = %d (or more) in the node config" % message,
            "max_message_bytes", message)
    line = "max_message_bytes %d holds the largest message, %d bytes (stage %d)" % (
        cfg.max_message_bytes, message, h)
    if cfg.role != "worker":  # a source holds no received tensor against max_queue_bytes
        return line
    h, tensor, _ = max(got, key=lambda n: n[1])
    if tensor > cfg.max_queue_bytes:
        raise LimitError(
            "max_queue_bytes: %d is below one stage-%d input (%d tensor bytes) of %s; every "
            "such task would be refused (overload): raise max_queue_bytes to %d or more"
            % (cfg.max_queue_bytes, h, tensor, _who(cfg), tensor),
            "max_queue_bytes = %d (or more) in the node config" % tensor,
            "max_queue_bytes", tensor)
    return line + "; max_queue_bytes %d holds a stage-%d input, %d bytes" % (
        cfg.max_queue_bytes, h, tensor)


def largest_need(errors: Sequence[LimitError]) -> LimitError:
    """Of the ``LimitError`` of several nodes whose limits come from one place (a topology's
    agents), the one naming the node and the value that decide what to set, so one change
    fixes every node: a ``max_message_bytes`` one before a ``max_queue_bytes`` one (each node
    is checked for the former first), of those the largest need (the first of equal ones),
    saying how many nodes are below theirs when more than one is."""
    order = {"max_message_bytes": 0, "max_queue_bytes": 1}
    field = min((e.field for e in errors), key=lambda f: order.get(f, 2))
    same = [e for e in errors if e.field == field]
    top = max(same, key=lambda e: e.need_bytes)  # max keeps the first of equal needs
    if len(same) == 1:
        return top
    return LimitError("%s (the largest need: %d agents are below theirs)" % (top, len(same)),
                      top.fix, top.field, top.need_bytes)


def check_message_size(frames: Sequence[Any], limit_bytes: int) -> None:
    """Raise ``WireError("oversized")`` for a received message above ``limit_bytes``,
    naming its size and the limit."""
    size = wire.frames_nbytes(frames)
    if size > limit_bytes:
        raise WireError("oversized", "message above max_message_bytes: %d bytes, the limit is "
                                     "%d" % (size, limit_bytes))
