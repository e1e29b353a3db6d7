"""``edge-agent doctor``'s calibration lines and jtop fixes.

A worker finds its mu in the profile under the key (board, L4T release, power mode, stage
sha256, backend, precision, engine threads) (``calibration.profile_match``, the rule
``lookup_capacity`` uses): ``node_profile_line`` looks each of the worker's stages up by that
same key and, where one misses, says why in the words ``run`` logs
(``agent.node.profilekey.missing_part``), so a profile of another bundle, release, backend or
thread count is a WARN (the agent times its engine), not an OK. On a Jetson whose jtop service
cannot be reached the active mode is unknown: the agent uses no entry, and ``calibrate`` refuses
to run, so the fix there is jtop first, never the calibrate command alone.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent.ops.doctor_check import FAIL, OK, WARN, Check, access_fix, closed_to
from calibration import host

# what the device line says for a key part no entry has (calibration.profile_match.KEY_PARTS)
MISSES = {"board": "no entry for this board (%s)",
          "L4T release": "entries for this board, none for this L4T release (%s)"}
# missing_part's parts whose phrase names the stage itself
STAGE_PARTS = ("stage", "sha256", "backend", "precision", "threads")
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

    return MISSES[part] % key[KEY_PARTS.index(part)]


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
    from agent.ops.paths import DEFAULT_USER

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
    from agent.ops.paths import DEFAULT_USER
    from agent.node.profilekey import missing_part, unmeasurable_mode
    from calibration import profile
    from calibration.profile_match import cpu_entry, entry_threads, find_entry
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
        # the manifest alone: the "node bundle" line compares the files with it
        manifest = load_bundle(cfg.bundle, verify_files=False)
        specs = [manifest.stage(h) for h in range(first, last + 1)]
    except Exception:  # unreadable profile: its FAIL; a broken bundle: the "node bundle" line
        return profile_line(name, path, mode or "", root, fix)
    ident = host.read_host_identity(root)
    backend, precision = expected_engine(cfg)
    threads = cfg.engine_threads  # a key part only where the entries are onnxruntime on the CPU
    found: List[int] = []
    unrecorded: List[int] = []
    missed: Dict[Tuple[str, str], List[int]] = {}
    for spec in specs:
        entry = find_entry(prof, ident.board, ident.l4t, mode, spec.sha256, backend, precision,
                           threads)
        if entry is not None:
            found.append(spec.index)
            if cpu_entry(entry) and entry_threads(entry) is None:
                unrecorded.append(spec.index)
            continue
        missed.setdefault(missing_part(prof, ident.board, ident.l4t, mode, spec, backend,
                                       precision, threads), []).append(spec.index)
    engine = "mode %s, %s %s, engine_threads %d" % (mode, backend, precision, threads)
    listed = ",".join(map(str, found))
    if not missed:
        mine = [e for e in prof.entries if (e.board, e.l4t) == (ident.board, ident.l4t)]
        seen = "%s: %d entries for this board and L4T release; stage(s) %s found (%s)" % (
            path, len(mine), listed, engine)
        if unrecorded:  # run uses them (with a WARNING): measured with an unknown thread count
            seen += ("; stage(s) %s: the entry records no engine thread count, run uses it for "
                     "engine_threads %d (calibrating again with --threads %d records it)"
                     % (",".join(map(str, unrecorded)), threads, threads))
        return Check(name, OK, seen)
    lines = []
    for (part, phrase), stages in missed.items():  # a phrase of the stage's own names it
        lines.append(phrase if part in STAGE_PARTS else "stage%s %s: %s" % (
            "s" if len(stages) > 1 else "", ",".join(map(str, stages)), phrase))
    now = unmeasurable_mode(mode, root) if cfg.power_mode else None
    if now is not None:  # the config pins a mode calibrate cannot measure here
        lines.append("calibrate measures only the mode active now here, %s, never %s"
                     % (now, mode))
        fix = ("set power_mode = \"%s\" in the config (or remove it), or %s with this machine "
               "in mode %s" % (now, fix, mode))
    timed = ("the engine of each stage" if not found else "that stage's engine"
             if len(found) == len(specs) - 1 else "the engines of the stages named")
    return Check(name, WARN, "%s: %s (%s); run times %s at start" % (
        path, "; ".join(lines), engine, timed), fix)


def calibration_fix(fix: str, jtop: Optional[Check]) -> str:
    """``fix`` (a calibrate command) after the fix of the jtop line ``jtop`` when it FAILs: run
    before it, calibrate refuses on a Jetson."""
    return fix if jtop is None else "jtop first: %s; then %s" % (jtop.fix, fix)


def mode_left_line(state_dir: str, calibrate_cmd: str) -> List[Check]:
    """A WARN where an interrupted calibration left the power mode switched, in the words a
    worker logs at start (``agent.node.modeleft.mode_left_text``): the mode ``calibrate``
    saved in ``state_dir`` with no calibration running there. ``calibrate_cmd`` restores it
    first; none while one runs here, or holds the board lock."""
    from agent.node.modeleft import board_lock_held, mode_left_text
    from calibration.device_lock import DEVICE_LOCK_PATH

    if board_lock_held(DEVICE_LOCK_PATH):  # a calibration on this board, whatever its folder
        return []
    found = mode_left_text(state_dir, calibrate_cmd)
    return [] if found is None else [Check("power mode", WARN, found[0], found[1])]
