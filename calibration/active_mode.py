"""The power mode active now, as calibration profile entries name it: the nvpmodel name on a
Jetson (through jtop), else the CPU-path name (``calibration.host.read_cpu_mode_name``).
``calibration.profile`` re-exports ``current_power_mode``, the name agents and doctor use."""

from __future__ import annotations


def current_power_mode(jtop_factory=None, root: str = "/") -> str:
    """Name of the active power mode: the nvpmodel name through jtop; off a Jetson (and on one
    without nvpmodel) the CPU-path name. On a Jetson -- an L4T release file under ``root`` --
    whose jtop service cannot be reached raises ``jtop_adapter.PowerModeUnknown`` (one line:
    the cause and the fix): the CPU-path name there would find no entry, or a wrong one. Off a
    Jetson jtop is not asked: a jtop client's start runs nvcc, dpkg, ldconfig and, finding no
    CUDA libraries, gcc, at every agent's start where jetson-stats is installed."""
    from calibration import host, jtop_adapter
    from engines.accelerator import TEGRA_RELEASE, is_jetson

    if not is_jetson(root):
        return host.read_cpu_mode_name(root)
    try:
        with jtop_adapter.open_device(jtop_factory) as device:
            return device.current_mode().name
    except jtop_adapter.NoPowerModes:
        return host.read_cpu_mode_name(root)
    except jtop_adapter.JtopUnavailable as exc:
        user = jtop_adapter.current_user()
        raise jtop_adapter.PowerModeUnknown(
            "%s on this Jetson (%s): the power mode is unknown; %s, or set power_mode = "
            "\"NAME\" in the node config" % (exc.reason, TEGRA_RELEASE,
                                               jtop_adapter.unreachable_fix(user)),
            exc.reason) from None
