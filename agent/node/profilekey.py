"""Why a calibration profile holds no entry for one stage engine in one power mode.

A profile entry is keyed by (board, L4T release, power mode, stage sha256, backend, precision,
engine threads) (``calibration.profile_match``; the thread count only for onnxruntime on the
CPU). When ``lookup_capacity`` finds nothing, ``missing_entry`` names the first part of that
key no entry matches, in that order, with what the profile holds instead: another board,
another L4T release (the board was upgraded since it was calibrated), a mode not calibrated
(or recorded as unavailable), a stage not calibrated, a stage whose ONNX file changed since (a
stale entry, or another bundle's), another backend, precision or thread count. ``run`` logs it
and ``edge-agent doctor`` reports it, in the same words. ``calibrate_hint`` is the
``edge-agent calibrate`` command that writes the entry; ``mode_note`` says when calibrate
cannot measure the mode here at all (a ``power_mode`` pinning a CPU-path mode this machine is
not in).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, List, Optional, Tuple

from calibration.profile import Profile, ProfileError, load_profile
from calibration.profile_match import THREADS, entry_threads, narrowed

SHOWN = 4  # values of a key part listed in a line; more are counted


def _listed(values: List[str]) -> str:
    values = sorted(set(values))
    more = " and %d more" % (len(values) - SHOWN) if len(values) > SHOWN else ""
    return ", ".join(values[:SHOWN]) + more


def missing_part(profile: Profile, board: str, l4t: str, mode: str, stage: Any, backend: str,
                 precision: str, threads: Optional[int] = None) -> Tuple[str, str]:
    """(part, phrase): the first part of the key of ``stage`` (a ``StageSpec``) in ``mode``
    that no entry of ``profile`` matches -- "board", "l4t", "mode", "stage", "sha256",
    "backend", "precision" or "threads" (``threads``: the engine's thread count, None: not
    asked) -- and a phrase saying so with what the profile holds instead (e.g. ``mode MAXN is
    not calibrated ... (calibrated: 15W)``); ("", "") when an entry matches the whole key."""
    if not profile.entries:
        return "mode", "the profile has no entries"
    i, left = narrowed(profile, (board, l4t, mode, stage.sha256, backend, precision, threads))
    if i is None:
        return "", ""
    if i == 0:
        return "board", "board %r has no entry (the profile holds %s)" % (
            board, _listed([e.board for e in left]))
    if i == 1:
        return "l4t", ("L4T %s has no entry on this board (the profile holds L4T %s: calibrated "
                       "before an upgrade?)" % (l4t, _listed([e.l4t for e in left])))
    if i == 2:
        line = "mode %s is not calibrated on this board and release (calibrated: %s)" % (
            mode, _listed([e.power_mode for e in left]))
        why = [u.reason for u in profile.unavailable
               if (u.board, u.l4t, u.power_mode) == (board, l4t, mode)]
        if why:  # a mode calibrate could not make active says why
            line += "; calibrate found it unavailable: %s" % why[0]
        return "mode", line
    if i == 3:
        left = [e for e in left if e.stage == stage.index]
        if not left:
            return "stage", "stage %d is not calibrated in mode %s" % (stage.index, mode)
        return "sha256", ("stage %d's sha256 %s has no entry in mode %s (the profile holds %s: "
                          "its ONNX file changed since calibration, a stale entry, or another "
                          "bundle's)" % (stage.index, stage.sha256[:12], mode,
                                         _listed([e.stage_sha256[:12] for e in left])))
    if i == THREADS:
        return "threads", ("stage %d is calibrated in mode %s with %s engine thread(s) only, "
                           "not the %d of engine_threads" % (
                               stage.index, mode, _listed([str(entry_threads(e)) for e in left]),
                               threads))
    part, want = ("backend", backend) if i == 4 else ("precision", precision)
    return part, ("stage %d is calibrated in mode %s with %s %s, not %s" % (
        stage.index, mode, part, _listed([e.key()[i] for e in left]), want))


def unmeasurable_mode(mode: str, root: str = "/") -> Optional[str]:
    """The mode active now, where calibrate cannot measure ``mode`` on this machine; None
    where it can. Off a Jetson calibrate measures only the mode active now (the CPU path,
    named by governor and frequency): a ``power_mode`` pinning another one gets no entry from
    ``--modes current`` or ``--modes all`` here."""
    from calibration import host
    from engines.accelerator import is_jetson

    if not mode or is_jetson(root):
        return None
    now = host.read_cpu_mode_name(root)
    return None if now == mode else now


def mode_note(mode: str, root: str = "/") -> str:
    """``unmeasurable_mode`` in words, with what to do instead; "" where calibrate can
    measure ``mode`` here."""
    now = unmeasurable_mode(mode, root)
    if now is None:
        return ""
    return ("calibrate measures only the mode active now here, %s, never %s: set power_mode = "
            "\"%s\" in the node config (or remove it), or calibrate with this machine in mode %s"
            % (now, mode, now, mode))


def missing_entry(path: str, stage: Any, backend: str, precision: str, mode: str,
                  ident: Any = None, threads: Optional[int] = None,
                  root: str = "/") -> Tuple[str, str]:
    """``missing_part`` of the profile at ``path`` for ``stage``'s engine (``threads``: its
    thread count) in ``mode`` on this device (``ident``: a ``HostIdentity``, default this
    machine's), with ``mode_note`` where calibrate cannot measure ``mode`` here; part "file"
    when the profile cannot be read, "mode" when the mode is unknown."""
    from calibration import host

    if not mode:
        return "mode", "the power mode is unknown"
    if not os.path.exists(path):
        return "file", "%s does not exist" % path
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        return "file", str(exc)
    ident = ident if ident is not None else host.read_host_identity(root)
    part, line = missing_part(profile, ident.board, ident.l4t, mode, stage, backend, precision,
                              threads)
    if not part:
        return "", "an entry matches, yet was not found"
    note = mode_note(mode, root)
    return part, line + ("; " + note if note else "")


def calibrate_hint(bundle: str, path: str, backend: str, precision: str, part: str,
                   threads: Optional[int] = None) -> str:
    """The ``edge-agent calibrate`` command that writes the entry ``missing_entry`` found
    missing: ``--modes current`` (the board is in that mode now) when only this mode, stage
    or thread count lacks it, else every mode (another board, release, stage file, backend or
    precision); with ``--threads`` when ``threads`` is given (the engine's count)."""
    return ("edge-agent calibrate --bundle %s --profile %s --modes %s --backend %s --precision %s%s"
            % (shlex.quote(bundle), shlex.quote(path),
               "current" if part in ("mode", "stage", "threads") else "all", backend, precision,
               " --threads %d" % threads if threads is not None else ""))
