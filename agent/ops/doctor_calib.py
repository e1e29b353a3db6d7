"""``edge-agent doctor``'s calibration lines and jtop fixes.

A worker finds its mu in the profile under the key (board, L4T release, power mode, stage
sha256, backend, precision) (``calibration.profile_match``, the rule ``lookup_capacity``
uses): ``node_profile_line`` counts the entries of each of the worker's stages by that same
key and names the part that misses, so a profile of another bundle, release or backend is a
WARN (the agent times its engine), not an OK. On a Jetson whose jtop service cannot be
reached the active mode is unknown: the agent uses no entry, and ``calibrate`` refuses to run,
so the fix there is jtop first, never the calibrate command alone.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

from agent.ops.doctor_check import FAIL, OK, WARN, Check, access_fix, closed_to
from calibration import host

# what the report says for a key part no entry has (calibration.profile_match.KEY_PARTS)
MISSES = {"board": "no entry for this board (%s)",
          "L4T release": "entries for this board, none for this L4T release (%s)",
          "mode": "none for mode %s",
          "stage hash": "none for the stage file (sha256 %s...): its entries are of another "
                        "bundle or another version of this one",
          "backend": "none measured with backend %s",
          "precision": "none measured at precision %s"}
AGENT_RESTART = "sudo systemctl restart edge-agent.target"


def jtop_user(service_user: str) -> str:
    """Whom a jtop fix names: the user running doctor (the one that could not reach the
    service), or the service user when doctor runs as root."""
    from calibration.jtop_adapter import current_user

    me = current_user()
    return service_user if me in ("root", "0") else me


def jtop_fix(text: str, user: str) -> str:
    """The runnable fix of a jtop client error ``text`` seen by ``user``."""
    if "ismatch" in text:
        return ("install the same jetson-stats version in the venv and system-wide, then sudo "
                "systemctl restart jtop.service")
    group = "sudo usermod -aG jtop %s, then restart the agent (%s; a login shell: log in " \
            "again)" % (user, AGENT_RESTART)
    if "can't access" in text or "ermission denied" in text or "uthentication" in text:
        return group
    if "not active" in text:
        return "sudo systemctl enable --now jtop.service"
    return "sudo systemctl enable --now jtop.service; if it runs: " + group


def _miss(part: str, key: Sequence[str]) -> str:
    from calibration.profile_match import KEY_PARTS

    value = key[KEY_PARTS.index(part)]
    return MISSES[part] % (value[:12] if part == "stage hash" else value)


def profile_line(name: str, path: str, mode: str, root: str, fix: str,
                 stage_hashes: Sequence[Tuple[int, str]] = (), user: str = "") -> Check:
    """An existing profile: FAIL unreadable (a worker naming it exits 78), WARN without an entry
    for this board, L4T release and ``mode`` (and each of ``stage_hashes``, (stage, sha256),
    when given): the engine is timed at start; else OK. ``fix``: calibrate, where the file is
    no profile; one the service ``user`` (default: the unit's) may not read is given to it."""
    from calibration import profile
    from calibration.profile_match import unmatched_part

    closed = closed_line(name, path, user)
    if closed is not None:
        return closed
    try:
        prof = profile.load_profile(path)
    except Exception as exc:
        text = str(exc)[len(path) + 2:] if str(exc).startswith(path + ": ") else str(exc)
        if isinstance(exc, PermissionError) or isinstance(exc.__context__, PermissionError):
            return closed_line(name, path, user, text)
        return Check(name, FAIL, "%s unreadable: %s" % (path, text), "move it away, then " + fix)
    ident = host.read_host_identity(root)
    key = (ident.board, ident.l4t, mode)
    mine = [e for e in prof.entries if (e.board, e.l4t) == (ident.board, ident.l4t)]
    part = unmatched_part(prof, key)
    if part in ("board", "L4T release"):
        return Check(name, WARN, "%s: %s: the engine is timed at start" % (
            path, _miss(part, key)), fix)
    seen = "%s: %d entries for this board and L4T release, " % (path, len(mine))
    if part == "mode":
        return Check(name, WARN, seen + "none for mode %s: the engine is timed at start" % mode,
                     fix)
    missing = [i for i, sha in stage_hashes if unmatched_part(prof, key + (sha,))]
    if missing:
        return Check(name, WARN, seen + "none in mode %s for stage(s) %s of the bundle (another "
                     "bundle's or an older stage file): the engine is timed at start"
                     % (mode, ",".join(map(str, missing))), fix)
    return Check(name, OK, seen + "%d in mode %s" % (len([e for e in mine if e.power_mode == mode]),
                                                     mode))


def closed_line(name: str, path: str, user: str = "", why: str = "") -> Optional[Check]:
    """The FAIL of a profile the service ``user`` (default: the unit's) may not read: ``why``,
    what reading it as doctor's user gave, or its owner and mode when doctor runs as root. Its
    fix gives it to that user (``sudo chown``): ``calibrate`` run with sudo leaves a profile
    root's, mode 0600, and its measurements are kept. None when the user may read it."""
    from agent.commands.install import DEFAULT_USER

    user = user or DEFAULT_USER
    closed = closed_to(user, path, os.R_OK)
    if closed is None and not why:
        return None
    return Check(name, FAIL, "%s: a worker naming it exits 78" % (
        closed[1] if closed else "%s unreadable: %s" % (path, why)), access_fix(user, path))


def expected_engine(cfg: Any) -> Tuple[str, str]:
    """(backend, precision) the worker config ``cfg``'s engines run here, as ``lookup_capacity``
    is asked for them: native TensorRT when it is asked for (or ``auto``) and imports, else
    onnxruntime, at fp32 unless its TensorRT provider is there; without loading anything (a
    TensorRT build that would fail and fall back is not foreseen)."""
    from engines.accelerator import resolve_accelerator
    from engines.loader import tensorrt_available

    gpu = resolve_accelerator(cfg.accelerator) != "none"
    if gpu and cfg.backend in ("auto", "tensorrt") and tensorrt_available():
        return "tensorrt", cfg.precision
    if cfg.precision == "fp32":
        return "onnxruntime", "fp32"
    try:
        import onnxruntime as ort

        trt_provider = gpu and "TensorrtExecutionProvider" in ort.get_available_providers()
    except ImportError:
        trt_provider = False
    return "onnxruntime", cfg.precision if trt_provider else "fp32"


def node_profile_line(name: str, path: str, cfg: Any, mode: Optional[str], root: str,
                      fix: str, jtop_down: Optional[Any] = None) -> Check:
    """The worker config ``cfg``'s profile at ``path`` as ``run`` uses it: each of its stages
    found by the whole key (OK), or which key part misses for which stage (WARN: that stage's
    engine is timed at start). ``mode``: the mode run looks up (its power_mode, else the active
    one); ``jtop_down``: the ``PowerModeUnknown`` of a Jetson whose jtop cannot be reached
    (then the mode is unknown without a power_mode, and calibrate needs jtop first)."""
    from agent.commands.install import DEFAULT_USER
    from calibration import profile
    from calibration.profile_match import find_entry, unmatched_part
    from engines.bundle import load_bundle

    closed = closed_line(name, path)  # doctor run as root reads what the agent may not
    if closed is not None:
        return closed
    if jtop_down is not None:
        jfix = jtop_fix(jtop_down.reason, jtop_user(DEFAULT_USER))
        fix = "jtop first: %s; then %s" % (jfix, fix)
        if mode is None:
            return Check(name, WARN, "%s: not used, run times the engine of each stage at start: "
                         "the power mode is unknown on this Jetson (%s)" % (path, jtop_down.reason),
                         fix + '; or set power_mode = "NAME" in the config')
    try:
        prof = profile.load_profile(path)
        first, last = cfg.stages
        specs = [load_bundle(cfg.bundle).stage(h) for h in range(first, last + 1)]
    except Exception:  # unreadable profile: its FAIL; a broken bundle: the "node bundle" line
        return profile_line(name, path, mode or "", root, fix)
    ident = host.read_host_identity(root)
    backend, precision = expected_engine(cfg)
    found: List[int] = []
    missed: List[str] = []
    for spec in specs:
        key = (ident.board, ident.l4t, mode, spec.sha256, backend, precision)
        if find_entry(prof, *key) is not None:
            found.append(spec.index)
        else:
            missed.append("stage %d: %s" % (spec.index, _miss(unmatched_part(prof, key), key)))
    engine = "mode %s, %s %s" % (mode, backend, precision)
    if not missed:
        mine = [e for e in prof.entries if (e.board, e.l4t) == (ident.board, ident.l4t)]
        return Check(name, OK, "%s: %d entries for this board and L4T release; stage(s) %s "
                     "found (%s)" % (path, len(mine), ",".join(map(str, found)), engine))
    return Check(name, WARN, "%s: %s (%s); run times %s at start" % (
        path, "; ".join(missed), engine,
        "that stage's engine" if found else "the engine of each stage"), fix)


def calibration_fix(fix: str, jtop: Optional[Check]) -> str:
    """``fix`` (a calibrate command) after the fix of the jtop line ``jtop`` when it FAILs: run
    before it, calibrate refuses on a Jetson."""
    return fix if jtop is None else "jtop first: %s; then %s" % (jtop.fix, fix)
