"""Identity of the device a calibration runs on: board model, L4T release and, without jtop,
the CPU-path power-mode name.

Parsing is separate from reading: ``parse_*`` take file contents, ``read_host_identity(root)``
reads the files under ``root`` (``/`` in production, a temporary tree in tests).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from typing import Optional

# Recorded for devices without /etc/nv_tegra_release (CI machines, workstations).
NO_L4T = "none"

_L4T_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


@dataclass(frozen=True)
class HostIdentity:
    """What a profile entry is keyed by besides power mode and engine."""

    board: str  # board model, e.g. "NVIDIA Jetson AGX Orin Developer Kit" or "x86_64 AMD EPYC"
    l4t: str  # L4T release "35.3.1", or "none" off-Jetson
    jetpack: Optional[str] = None  # JetPack release when jtop reports it (informational)


def parse_l4t_release(text: str) -> Optional[str]:
    """Return "35.3.1" from the first line of /etc/nv_tegra_release, or None if it has none."""
    match = _L4T_RE.search(text)
    if not match:
        return None
    return "%s.%s" % (match.group(1), match.group(2))


def parse_device_model(raw: bytes) -> Optional[str]:
    """Decode /proc/device-tree/model (NUL-terminated bytes); None when empty."""
    text = raw.replace(b"\x00", b"").decode("utf-8", "replace").strip()
    return text or None


def parse_cpu_model(cpuinfo: str) -> Optional[str]:
    """The first "model name" (x86) or "Hardware"/"Model" (ARM) line of /proc/cpuinfo."""
    for key in ("model name", "Model", "Hardware"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return None


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def read_host_identity(root: str = "/") -> HostIdentity:
    """Read board model and L4T release from the files under ``root``."""
    board = None
    try:
        with open(os.path.join(root, "proc/device-tree/model"), "rb") as f:
            board = parse_device_model(f.read())
    except OSError:
        pass
    if board is None:
        cpu = parse_cpu_model(_read_text(os.path.join(root, "proc/cpuinfo")) or "")
        board = "%s %s" % (platform.machine() or "unknown", cpu or "cpu")
    release = _read_text(os.path.join(root, "etc/nv_tegra_release"))
    l4t = parse_l4t_release(release) if release else None
    return HostIdentity(board=board, l4t=l4t or NO_L4T)


def cpu_mode_name(governor: Optional[str], max_mhz: float, current_mhz: float) -> str:
    """Name of the single CPU-path "power mode": governor and frequency cap, e.g.
    ``cpu-performance-2200MHz``. Without a cap (virtual machines) the current frequency is
    used, rounded to 100 MHz so that small fluctuations keep the same name."""
    mhz = max_mhz if max_mhz and max_mhz > 0 else current_mhz
    mhz_rounded = int(round((mhz or 0.0) / 100.0) * 100)
    return "cpu-%s-%dMHz" % (governor or "nogovernor", mhz_rounded)


def cpu_mode_governor(name: str) -> Optional[str]:
    """The governor of a ``cpu_mode_name`` (``cpu-GOVERNOR-NNNNMHz``); None for another name
    (an nvpmodel mode)."""
    parts = name.split("-")
    return parts[1] if len(parts) == 3 and parts[0] == "cpu" and parts[2].endswith("MHz") \
        else None


def read_cpu_mode_name(root: str = "/") -> str:
    """The CPU-path mode name for this machine (governor from sysfs, frequency via psutil)."""
    import psutil

    governor = _read_text(os.path.join(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"))
    freq = None
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        freq = None
    max_mhz = float(freq.max) if freq else 0.0
    current_mhz = float(freq.current) if freq else 0.0
    return cpu_mode_name(governor.strip() if governor else None, max_mhz, current_mhz)
