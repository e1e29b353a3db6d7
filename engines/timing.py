"""The service time of one stage engine call: one rule for ``edge-agent calibrate``, a worker's
start-up timing and its online capacity estimate, so that the three measure one mu.

The service time is the engine call alone (``Engine.run`` on the stage input): what a worker
does around it for each task -- copying the features, the exit heads' softmax, messaging -- is
its per-task overhead, not the stage's compute, and is not in mu.

The clock (``engine_clock``): an engine that computes on the calling thread (onnxruntime on the
CPU with one intra-op thread: ``info`` device "CPU", threads 1) is timed by that thread's CPU
time (``time.thread_time``), so neither time descheduled by other processes nor waits for the
interpreter lock (which a busy I/O thread holds) count; any other engine (a GPU, a thread
pool) by the wall clock around the call, since its work is not on the calling thread.

The input (``timing_input``): a fixed standard-normal tensor (seed 0) of the stage's input
shape for a float input, zeros otherwise; a zero image can take other paths in an engine than
real data (denormals, sparsity), a fixed random one does not.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Tuple

import numpy as np

WALL_CLOCK = time.monotonic  # the clock of an engine that does not compute on the calling thread


def on_calling_thread(engine: Any) -> bool:
    """True when ``engine`` computes on the thread that calls ``run`` (its ``info`` says CPU
    and one intra-op thread), so that thread's CPU time is its service time."""
    info = getattr(engine, "info", None) or {}
    return info.get("device") == "CPU" and info.get("threads") == 1


def engine_clock(engine: Any, wall: Callable[[], float] = WALL_CLOCK) -> Callable[[], float]:
    """The clock ``engine``'s calls are timed by: the calling thread's CPU time when it computes
    on that thread, else ``wall`` (module docstring)."""
    return time.thread_time if on_calling_thread(engine) else wall


def timed_run(run: Callable[[np.ndarray], Any], x: np.ndarray,
              clock: Callable[[], float]) -> Tuple[Any, float]:
    """(``run(x)``, its service time in seconds on ``clock``): one engine call, nothing else."""
    t0 = clock()
    out = run(x)
    return out, clock() - t0


def timing_input(spec: Any) -> np.ndarray:
    """The input a stage is timed on (module docstring): ``spec``'s input shape and dtype."""
    dtype = np.dtype(spec.input_dtype)
    shape = tuple(spec.input_shape)
    if dtype.kind == "f":
        return np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)
