"""A worker's start-up parts: its stage engines loaded, its inference thread, its capacity
timed (or looked up). ``agent.node.build`` hands them on to the node it builds."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from agent.config.node import NodeConfig
from agent.errors import UsageError, missing_module_hint
from agent.node.capacity import Capacity, worker_capacity
from agent.node.head_logits import LogitsInferenceThread
from agent.node.inference import InferenceThread
from calibration.online import OnlineCapacityEstimator
from engines.accelerator import check_engines, resolve_accelerator
from engines.bundle import Bundle
from engines.loader import load_engine, unloadable

# Start-up time asked of systemd (EXTEND_TIMEOUT_USEC) while engines load: a first TensorRT
# load builds the plan, which takes minutes on the smaller Jetsons.
ENGINE_LOAD_TIMEOUT_S = 1800.0


def load_engines(cfg: NodeConfig, bundle: Bundle,
                 notifier: Any = None) -> Tuple[Dict[int, Any], Dict[int, Any]]:
    """Stage specs and engines (stage -> each) of the stages this worker serves."""
    first, last = cfg.stages
    specs = {h: bundle.stage(h) for h in range(first, last + 1)}
    engines: Dict[int, Any] = {}
    if notifier is not None:  # onnxruntime too: its TensorRT provider builds the plan first
        notifier.extend_timeout(ENGINE_LOAD_TIMEOUT_S)
        notifier.status("loading stage engine(s) %d-%d (a TensorRT plan build takes minutes)"
                        % (first, last))
    try:
        for h, spec in specs.items():
            try:
                engines[h] = load_engine(spec, backend=cfg.backend, threads=cfg.engine_threads,
                                         precision=cfg.precision, max_batch=cfg.engine_batch_max,
                                         cache_dir=cfg.engine_cache_dir or None,
                                         accelerator=resolve_accelerator(cfg.accelerator))
            except (UsageError, MemoryError):
                raise
            except Exception as exc:  # a file the runtime cannot load: a bundle fault (exit 78)
                # unless the runtime itself is missing (onnxruntime not installed): say which
                hint = missing_module_hint(exc) if isinstance(exc, ModuleNotFoundError) else None
                if hint is not None:
                    raise UsageError("stage %d: %s" % (h, hint)) from None
                raise UsageError(unloadable(spec, exc)) from None
        # accelerator = "required" and a stage on the CPU: one line, exit 78 (EX_CONFIG)
        check_engines(cfg.accelerator, engines, cfg.state_dir)
    except BaseException:
        for e in engines.values():
            e.close()
        raise
    return specs, engines


def start_worker(cfg: NodeConfig, bundle: Bundle, wants_logits: bool, notifier: Any,
                 starting: Any) -> Tuple[Dict[int, Any], Dict[int, Any], InferenceThread,
                                         Capacity]:
    """Stage specs and engines, the inference thread (``wants_logits``: the policy keeps each
    head's logits) and the capacity of a worker; a stop signal (``starting``, a
    ``StartupSignals``) ends it between steps. A stage that fails on its timing input is a
    bundle fault: one line, ``UsageError``."""
    with starting.interruptible():  # loads and times; writes only engines.json, atomically
        specs, engines = load_engines(cfg, bundle, notifier)
    runner_cls = LogitsInferenceThread if wants_logits else InferenceThread
    runner = runner_cls(engines, {h: s.flops for h, s in specs.items()},
                        cfg.emulate_capacity_flops, batch_max=cfg.engine_batch_max)
    try:
        with starting.interruptible():
            report = worker_capacity(cfg, specs, engines)
    except (UsageError, MemoryError):
        raise
    except Exception as exc:  # the first run on the timing input: the manifest does not fit
        raise UsageError("stage(s) %d-%d failed on a test input at start-up (%s: %.300s); "
                         "the bundle's manifest (input name, shape, dtype, outputs) does "
                         "not match its ONNX files: rebuild the bundle"
                         % (cfg.stages[0], cfg.stages[1], type(exc).__name__, exc)) from None
    estimator = None
    if cfg.online_capacity and len(specs) == 1:  # one stage: every service time is comparable
        estimator = OnlineCapacityEstimator(float(specs[cfg.stage].flops),
                                            report.capacity_flops)
    starting.step("stage engine(s) %d-%d loaded and timed" % cfg.stages)
    return specs, engines, runner, Capacity(report, estimator)
