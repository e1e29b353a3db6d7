"""doctor's line on a worker's ``engine_batch_max`` above 1: which of its stages will run
waiting tasks as one engine call and why the others will not (``agent.node.batching``), said
before ``run`` logs it at start-up."""

from __future__ import annotations

from typing import Any

from agent.node.batching import FIXED_BATCH, thread_unbatched, unbatched_why
from agent.ops.doctor_check import OK, WARN, Check

NAME = "node engine batching"


def check_batching(cfg: Any, bundle: Any, policy: Any) -> Check:
    """OK when every stage of the worker config ``cfg`` can batch; else a WARN naming each that
    runs one task per call and why: its bundle input has a fixed batch, its device is emulated
    or its ``policy`` keeps each head's logits (reasons and words as ``batch_limits``')."""
    first, last = cfg.stages
    unbatched = thread_unbatched(cfg.emulate_capacity_flops > 0,
                                 bool(getattr(policy, "wants_logits", False)))
    whys = {h: unbatched or unbatched_why(bundle.stage(h)) for h in range(first, last + 1)}
    batching = [str(h) for h, why in whys.items() if not why]
    parts = (["stage %s: up to %d waiting tasks as one engine call" % (
        ", ".join(batching), cfg.engine_batch_max)] if batching else [])
    parts += ["stage %d: one task per call (%s)" % (h, why) for h, why in whys.items() if why]
    detail = "engine_batch_max %d: %s" % (cfg.engine_batch_max, "; ".join(parts))
    if any(whys.values()):
        fixed = FIXED_BATCH in whys.values()
        return Check(NAME, WARN, detail, "set engine_batch_max = 1 where it changes nothing%s" % (
            "; a stage with a fixed batch batches once its bundle is built with a dynamic "
            "batch (docs/byo-model.md)" if fixed else ""))
    return Check(NAME, OK, detail)
