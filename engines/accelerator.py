"""Whether a stage engine runs on the GPU, and what the node's ``accelerator`` setting makes of it.

``accelerator`` in the node config says how much the GPU matters:

- ``required``: a stage that would run on the CPU stops the agent at start-up with one line (the
  cause and ``edge-agent doctor``) and exit status 78, which the systemd unit does not restart
  on: a Jetson quietly running on its CPU is worse than one that says it cannot start.
- ``preferred``: the CPU is used when the GPU path fails; the fallback is logged at WARNING with
  its cause and shown in the metrics and the state directory's ``engines.json``.
- ``none``: the CPU on purpose (no TensorRT, no GPU provider, no warning).

The default ("" in the config) is ``required`` on a Jetson and ``preferred`` elsewhere.
Backends record every fallback in ``engine.info["fallbacks"]`` as ``{"reason", "detail"}``;
``reason`` is one of ``FALLBACK_REASONS`` (a metrics label, so a short fixed set).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Mapping

from agent.errors import EXIT_CONFIG, UsageError
from agent.ops.atomic import write_atomic

log = logging.getLogger("engines")

ACCELERATORS = ("required", "preferred", "none")
FALLBACK_REASONS = (
    "tensorrt_missing",  # the tensorrt Python package does not import
    "tensorrt_failed",  # TensorRT is there but the plan could not be built or loaded
    "provider_missing",  # this onnxruntime build has no GPU provider (a CPU wheel)
    "provider_failed",  # a GPU provider is in the build but could not start
    "precision",  # fp16 asked, the provider in use runs fp32
)
ENGINES_FILE = "engines.json"  # per stage: backend, device, providers, fallbacks
TEGRA_RELEASE = "/etc/nv_tegra_release"  # present on every L4T (Jetson) root file system


class AcceleratorUnavailable(UsageError):
    """``accelerator = "required"`` and a stage would run on the CPU; exits EX_CONFIG (78)."""

    exit_status = EXIT_CONFIG


def is_jetson(root: str = "/") -> bool:
    """True on a Jetson (an L4T root file system under ``root``)."""
    return os.path.exists(os.path.join(root, TEGRA_RELEASE.lstrip("/")))


def resolve_accelerator(mode: str, root: str = "/") -> str:
    """The effective mode: ``mode``, or for "" required on a Jetson and preferred elsewhere."""
    if mode and mode not in ACCELERATORS:
        raise UsageError("accelerator must be one of %s, got %r" % ("|".join(ACCELERATORS), mode))
    return mode or ("required" if is_jetson(root) else "preferred")


def on_gpu(info: Mapping[str, Any]) -> bool:
    """True when an engine's ``info`` says it runs on a GPU."""
    return str(info.get("device", "CPU") or "CPU") != "CPU"


def fallback(info: Dict[str, Any], reason: str, detail: str) -> None:
    """Record a fallback in an engine's ``info`` (the caller logs it)."""
    assert reason in FALLBACK_REASONS, reason
    info.setdefault("fallbacks", []).append({"reason": reason, "detail": detail})


def summary(engines: Mapping[int, Any]) -> Dict[str, Dict[str, Any]]:
    """Per stage: backend, device, providers, whether on the GPU, and the fallbacks."""
    out = {}
    for h, e in sorted(engines.items()):
        info = dict(getattr(e, "info", {}) or {})
        out[str(h)] = {"backend": info.get("backend"), "device": info.get("device"),
                       "providers": list(info.get("providers", [])), "on_gpu": on_gpu(info),
                       "precision": info.get("precision"),
                       "fallbacks": list(info.get("fallbacks", []))}
    return out


def report_engines(engines: Mapping[int, Any], metrics: Any) -> None:
    """Per stage engine: the on-GPU gauge and the fallback causes, into ``metrics``."""
    for h, s in summary(engines).items():
        metrics.engine(h, s["backend"] or "?", s["on_gpu"], [f["reason"] for f in s["fallbacks"]])


def check_engines(mode: str, engines: Mapping[int, Any], state_dir: str = "") -> Dict[str, Dict[str, Any]]:
    """Apply ``accelerator`` to loaded engines (stage -> engine).

    Writes ``engines.json`` to ``state_dir`` (when given), then raises ``AcceleratorUnavailable``
    when the mode is required and a stage is on the CPU.
    """
    mode = resolve_accelerator(mode)
    report = summary(engines)
    if state_dir:
        try:
            write_atomic(os.path.join(state_dir, ENGINES_FILE),
                         json.dumps({"accelerator": mode, "stages": report}, indent=1) + "\n",
                         durable=False)
        except OSError as exc:
            log.warning("cannot write %s in %s: %s", ENGINES_FILE, state_dir, exc)
    cpu = [(h, s) for h, s in report.items() if not s["on_gpu"]]
    if mode == "required" and cpu:
        h, s = cpu[0]
        raise on_cpu_but_required(h, "; ".join(f["detail"] for f in s["fallbacks"]))
    return report


def on_cpu_but_required(stage: Any, causes: str) -> AcceleratorUnavailable:
    """The start-up fault of a stage that would run on the CPU under accelerator = "required"
    (the agent's line, and ``doctor --config``'s)."""
    return AcceleratorUnavailable(
        "stage %s would run on the CPU (%s) but accelerator = \"required\"; run `edge-agent "
        "doctor` for the fix, or set accelerator = \"preferred\" to accept the CPU"
        % (stage, causes or "no GPU backend in use"))
