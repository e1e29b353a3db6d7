"""NVIDIA's ``nvpmodel`` and ``jetson_clocks`` commands run directly: the last way to put the
board's original power mode (and jetson_clocks) back when the jtop service cannot be used in a
calibration (stopped, or restarting after an upgrade). Modes are otherwise switched through jtop
(``calibration.modes``).

Only the tools' documented command lines are used: ``nvpmodel -m ID`` (an ``NVPM ERROR`` line
or a non-zero exit means failure), ``nvpmodel -q`` (``NV Power Mode: NAME``, then the id on
the next line) and ``jetson_clocks`` without options (locks the clocks at the maximum of the
active mode; a mode set by ``nvpmodel -m`` unlocks them). Nothing is ever written to stdin:
``YES`` there would make nvpmodel force a switch that reboots the board.
"""

from __future__ import annotations

import re
import subprocess
from typing import List, Optional

_MODE_RE = re.compile(r"NV Power Mode: (\S+)")


class NvpmodelFailed(Exception):
    """nvpmodel (or jetson_clocks) did not do what was asked; one line naming the command and
    what it did."""


def _run(args: List[str], timeout_s: float, tool: str = "nvpmodel") -> str:
    """stdout of ``TOOL ARGS`` (stdin empty, at most ``timeout_s``); NvpmodelFailed on a
    missing tool, no return in time, a non-zero exit or an NVPM ERROR line."""
    command = " ".join([tool] + args)
    try:
        proc = subprocess.run([tool] + args, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=timeout_s)
    except FileNotFoundError:
        raise NvpmodelFailed("%s: %s is not on PATH" % (command, tool))
    except subprocess.TimeoutExpired:  # the child is killed before this is raised
        raise NvpmodelFailed("%s did not return within %.0f s" % (command, timeout_s))
    except OSError as exc:
        raise NvpmodelFailed("%s: %s" % (command, exc))
    errors = [line.strip() for line in proc.stdout.splitlines() if "NVPM ERROR" in line]
    if proc.returncode != 0 or errors:
        said = errors[0] if errors else " ".join(proc.stdout.split())[-200:]
        raise NvpmodelFailed("%s exited with status %d%s" % (command, proc.returncode,
                                                            (": " + said) if said else ""))
    return proc.stdout


def query_mode_id(timeout_s: float = 10.0) -> Optional[int]:
    """The active mode's id by ``nvpmodel -q``; None when its output has no such line."""
    lines = _run(["-q"], timeout_s).splitlines()
    for i, line in enumerate(lines):
        if _MODE_RE.search(line) and i + 1 < len(lines) and lines[i + 1].strip().isdigit():
            return int(lines[i + 1].strip())
    return None


def set_mode(mode_id: int, timeout_s: float) -> None:
    """``nvpmodel -m MODE_ID`` (never forced), then verify by ``nvpmodel -q`` that the board
    reports that mode; NvpmodelFailed otherwise. Each command gets at most ``timeout_s``."""
    _run(["-m", str(int(mode_id))], timeout_s)
    now = query_mode_id(timeout_s)
    if now != mode_id:
        raise NvpmodelFailed("nvpmodel -m %d returned but nvpmodel -q reports mode id %s"
                             % (mode_id, now))


def jetson_clocks_on(timeout_s: float) -> None:
    """``jetson_clocks`` without options: lock the clocks at the active mode's maximum again
    after ``set_mode`` unlocked them; NvpmodelFailed (naming ``jetson_clocks``) otherwise."""
    _run([], timeout_s, tool="jetson_clocks")
