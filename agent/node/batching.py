"""Engine batching: jobs of one stage that wait together run as one engine call.

With ``engine_batch_max`` > 1 (``NodeConfig``; default 1, off) the inference thread, or the
loop's thread on one core, stacks up to that many waiting jobs of one stage into one input
of batch N and runs the engine once. An engine call has a fixed cost besides its compute
(onnxruntime on a 2-core x86_64 VM: a demo stage of 20-40 us per call took 7-23 us per task in
calls of 8), paid once per batch instead of once per task. Only jobs already waiting are
batched: none waits for others to come, so a lightly loaded worker still runs one task per
call, with the latency it had; under load the jobs of a batch finish together, the first of
them later than alone and the last sooner.

Which stages: one whose bundle marks its input ``dynamic_batch`` (the demo bundle's do), on an
engine that takes a batch: onnxruntime any size; a native TensorRT engine up to the
``max_batch`` its plan was built for (a worker builds its plans for ``engine_batch_max``:
``engines.loader.load_engine``, a plan of its own in the cache). ``batch_limit`` decides, once
per stage at start-up. An emulated device (its service time padded job by job) and a policy
that keeps each head's logits run one task per call; every stage left so is logged.

What changes with it:
- Each job's engine time is an equal share of the call (``Done.batch`` > 1). Such a share is
  no measure of mu as calibration and the start-up timing define it (one task per call): it
  feeds no sample to the online capacity estimate, which under saturation, where nearly every
  run is batched, keeps its last value (a slower power mode is still read by the Jetson mode
  check). Nor do the single runs between batched ones, until ``WARM_RUNS`` of them have run
  back to back (a batched call starts a new ``Done.streak``): in the agent they read 1.4-1.5x
  the start-up time (the one-core worker bench, saturated: the estimate fell to 0.65-0.70 of
  its start with them, 0.90-0.91 without batching, when the estimate averaged every run),
  though a loop of single calls after batched ones runs as fast as one without.
- Results equal single runs' up to float rounding: an engine may take another kernel for a
  batch, so confidences can differ in their last bits, and a task whose confidence sits on its
  threshold can exit at another stage.
- A batched call that raises is run again job by job, so one failing task fails alone.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Tuple

import numpy as np

from agent.node.jobs import Done, Job
from engines import timing

log = logging.getLogger(__name__)


# why a stage runs one task per call whatever ``engine_batch_max`` (the start-up WARNING's and
# doctor's words): every stage of a thread, or one stage
EMULATED = "its device is emulated (emulate_capacity_flops)"
KEEPS_LOGITS = "its policy keeps each head's logits"
FIXED_BATCH = "its input has a fixed batch of 1 in the bundle"
PLAN_BATCH_1 = "its engine was built for batch 1"


def thread_unbatched(emulated: bool, keeps_logits: bool) -> str:
    """Why no stage of an inference thread batches ("": they may): an emulated device (its
    service time padded job by job), or a policy that keeps each head's logits."""
    return EMULATED if emulated else KEEPS_LOGITS if keeps_logits else ""


def unbatched_why(stage: Any) -> str:
    """Why a stage (a ``StageSpec``) runs one task per call whatever its engine ("": it may
    batch): its bundle input has a fixed batch of 1."""
    return "" if getattr(stage, "dynamic_batch", False) else FIXED_BATCH


def batch_limit(engine: Any, batch_max: int) -> int:
    """Jobs one call of ``engine`` may take: ``batch_max`` where its stage's input takes any
    batch size (a native TensorRT engine: at most its own ``max_batch``), else 1."""
    stage = getattr(engine, "stage", None)
    if batch_max <= 1 or not getattr(stage, "dynamic_batch", False):
        return 1
    return max(1, min(batch_max, int(getattr(engine, "max_batch", batch_max))))


def batch_limits(engines: Mapping[int, Any], batch_max: int, unbatched: str = ""
                 ) -> Dict[int, int]:
    """``batch_limit`` per stage; with ``batch_max`` > 1, each stage that cannot batch is logged
    with why. ``unbatched``: why no stage of this thread batches ("": they may), such as an
    emulated device or a policy that keeps each head's logits (``head_logits``)."""
    limits = {h: 1 if unbatched else batch_limit(e, batch_max) for h, e in engines.items()}
    for h, n in sorted(limits.items()):
        if batch_max > 1 and n == 1:
            why = unbatched or unbatched_why(getattr(engines[h], "stage", None)) or PLAN_BATCH_1
            log.warning("engine_batch_max %d: stage %d runs one task per call (%s)",
                        batch_max, h, why)
    return limits


def chunks(jobs: List[Job], limits: Mapping[int, int]) -> Iterator[List[Job]]:
    """``jobs`` in order, cut into runs of consecutive jobs of one stage, each run at most
    ``limits[stage]`` long (a stage not in ``limits``: one job a run)."""
    run: List[Job] = []
    for job in jobs:
        if run and (job.stage != run[0].stage or len(run) >= limits.get(job.stage, 1)):
            yield run
            run = []
        run.append(job)
    if run:
        yield run


def batch_step(engine: Any, clock: Callable[[], float], jobs: List[Job]
               ) -> List[Tuple[Done, Any]]:
    """One engine call on ``jobs``' inputs stacked (each of batch 1): per job its ``Done``
    (features a row of the call's output, engine time an equal share, ``batch`` set; no
    confidence yet) and its logits row (None: a stage without a head). Raises what the
    engine raises."""
    x = np.concatenate([job.x for job in jobs])
    out, engine_s = timing.timed_run(engine.run, x, clock)
    n = len(jobs)
    share = engine_s / n
    feats, logits = out.features, out.logits
    if feats is not None:
        feats = np.ascontiguousarray(feats)  # rows of a C-contiguous array are contiguous
    got = []
    for i, job in enumerate(jobs):
        done = Done(job.meta, None if feats is None else feats[i:i + 1], None, None, share, share)
        done.batch = n
        got.append((done, None if logits is None else logits[i:i + 1]))
    return got
