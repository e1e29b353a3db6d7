"""Thin adapter over jetson-stats' ``jtop`` client API (the part shared by 4.x and 7.x).

Only documented attributes are used::

    from jtop import jtop, JtopException
    with jtop(interval=0.5) as j:
        j.ok()                          # waits for the next update; False once closed
        j.nvpmodel.id, j.nvpmodel.name  # active power mode
        j.nvpmodel.models               # mode names, index = mode id
        j.nvpmodel.status               # per mode: False if it can only be set with force
        j.nvpmodel.is_running()         # True while the service is still switching
        j.nvpmodel = 2                  # set a mode by id (or by name); never with force,
                                        # which reboots the board
        bool(j.jetson_clocks)           # jetson_clocks on/off; j.jetson_clocks = True sets it
        j.power        # {'rail': {...}, 'tot': {'power': mW, 'avg': mW, ...}}
        j.gpu          # {'gpu': {'freq': {'cur': kHz, 'max': kHz, 'min': kHz, ...}, ...}}
        j.cpu          # {'total': {...}, 'cpu': [{'online': bool, 'freq': {'cur','max','min'} kHz}]}
        j.temperature  # {'CPU': {'temp': C, 'online': bool, ['max': C, 'crit': C]}, ...}
        j.board        # {'hardware': {'Model': ..., 'L4T': ..., 'Jetpack': ...}, ...}

Parsing is separate from reading: the ``parse_*`` functions take those dicts (as recorded in
tests) and return plain values; ``JetsonDevice`` only reads attributes. Off-Jetson, without
jetson-stats or without its service, ``open_device`` raises ``JtopUnavailable`` with one clear
line, and callers take the CPU path off a Jetson; on one (an L4T release file) they refuse to
name or measure a mode without it (``PowerModeUnknown``; docs/jetson.md).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

# jetson-stats releases before this mark every nvpmodel mode settable (the guard does nothing).
MIN_JTOP_RELEASE = (4, 3)

# jtop marks an offline temperature sensor with this value.
TEMPERATURE_OFFLINE_C = -256.0


def _release(version: str) -> Tuple[int, ...]:
    """(major, minor) of a version string such as "7.2.2"; (0, 0) when unreadable."""
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return (0, 0)


class JtopUnavailable(Exception):
    """jtop cannot be used here (not installed, not a Jetson, service down); one-line reason.
    ``reason``: the cause alone, without a hint on what to do (callers add their own fix)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ConnectionLost(JtopUnavailable):
    """An open connection to the jtop service broke: the service stopped, or restarted (an
    upgrade of jetson-stats, systemd's Restart=on-failure); a new client may reach it again."""


class NoPowerModes(JtopUnavailable):
    """jtop answers but the board has no nvpmodel: one mode, measured as the CPU path's."""


class PowerModeUnknown(JtopUnavailable):
    """On a Jetson (an L4T release file) jtop cannot say the active power mode: the mode is
    unknown, never the CPU path's name. The message holds the cause and the fix."""


def unreachable_fix(user: str) -> str:
    """The runnable fixes of a jtop service that ``user`` cannot reach: the group (a process
    gets it when it starts) or the service."""
    return ("add %s to group jtop (sudo usermod -aG jtop %s) and restart it, or start "
            "jtop.service (sudo systemctl enable --now jtop.service)" % (user, user))


def current_user() -> str:
    """Name of the user this process runs as (its uid where the user database has none)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


@dataclass(frozen=True)
class ModeInfo:
    """One nvpmodel power mode of this board."""

    id: int
    name: str
    settable: bool  # False: nvpmodel can only switch to it with force (a reboot); never done


@dataclass(frozen=True)
class ModeState:
    """What the board reports about its active mode right now."""

    id: int
    name: str
    switching: bool  # the nvpmodel service is still applying a change


@dataclass(frozen=True)
class Reading:
    """One sample of power, clocks and temperatures (None/empty where the board has no sensor)."""

    power_w: Optional[float] = None  # total board power
    gpu_cur_khz: Optional[float] = None
    gpu_max_khz: Optional[float] = None  # the GPU clock cap of the active mode
    cpu_cur_khz: Optional[float] = None  # highest current frequency over online cores
    cpu_max_khz: Optional[float] = None  # highest cap over online cores
    temperatures_c: Dict[str, float] = field(default_factory=dict)  # online sensors
    temperature_limits_c: Dict[str, float] = field(default_factory=dict)  # sensor -> its max/crit


# ---------------------------------------------------------------- parsing (pure)


def as_mapping(value: Any) -> Optional[Mapping[str, Any]]:
    """``value`` as a mapping: a dict, or one of jetson-stats' dict-like objects (``j.gpu`` is a
    ``GenericInterface`` with ``items()``/``get()``, not a ``Mapping``); None otherwise."""
    if isinstance(value, Mapping):
        return value
    items = getattr(value, "items", None)
    if callable(items) and callable(getattr(value, "get", None)):
        try:
            return dict(items())
        except (TypeError, ValueError):
            return None
    return None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_power(power: Mapping[str, Any]) -> Optional[float]:
    """Total board power in W from ``j.power`` (``tot.power`` is in mW); None without sensors."""
    power = as_mapping(power)
    total = power.get("tot") if power is not None else None
    if not isinstance(total, Mapping):
        return None
    mw = _number(total.get("power"))
    return None if mw is None else mw / 1000.0


def parse_gpu(gpu: Mapping[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """(current, max) frequency in kHz of the first GPU in ``j.gpu`` (a dict or jetson-stats'
    ``GPU`` object)."""
    gpu = as_mapping(gpu)
    if gpu is None:
        return None, None
    for value in gpu.values():
        freq = value.get("freq") if isinstance(value, Mapping) else None
        if isinstance(freq, Mapping):
            return _number(freq.get("cur")), _number(freq.get("max"))
    return None, None


def parse_cpu(cpu: Mapping[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """(highest current, highest max) frequency in kHz over the online cores of ``j.cpu``."""
    cpu = as_mapping(cpu)
    cores = cpu.get("cpu") if cpu is not None else None
    cur: List[float] = []
    cap: List[float] = []
    for core in cores if isinstance(cores, list) else []:
        if not isinstance(core, Mapping) or not core.get("online", False):
            continue
        freq = core.get("freq")
        if isinstance(freq, Mapping):
            c, m = _number(freq.get("cur")), _number(freq.get("max"))
            if c is not None:
                cur.append(c)
            if m is not None:
                cap.append(m)
    return (max(cur) if cur else None), (max(cap) if cap else None)


def parse_temperature(
    temperature: Mapping[str, Any],
) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(temperature per online sensor, limit per sensor that reports ``max`` or ``crit``), in C."""
    temps: Dict[str, float] = {}
    limits: Dict[str, float] = {}
    temperature = as_mapping(temperature)
    if temperature is None:
        return temps, limits
    for name, sensor in temperature.items():
        if not isinstance(sensor, Mapping):
            continue
        t = _number(sensor.get("temp"))
        if t is None or not sensor.get("online", True) or t <= TEMPERATURE_OFFLINE_C:
            continue
        temps[str(name)] = t
        for key in ("max", "crit"):
            limit = _number(sensor.get(key))
            if limit is not None and limit > 0:
                limits[str(name)] = limit
                break
    return temps, limits


def parse_reading(power: Any, gpu: Any, cpu: Any, temperature: Any) -> Reading:
    """A ``Reading`` from the four documented attribute dicts."""
    gpu_cur, gpu_max = parse_gpu(gpu or {})
    cpu_cur, cpu_max = parse_cpu(cpu or {})
    temps, limits = parse_temperature(temperature or {})
    return Reading(
        power_w=parse_power(power or {}),
        gpu_cur_khz=gpu_cur,
        gpu_max_khz=gpu_max,
        cpu_cur_khz=cpu_cur,
        cpu_max_khz=cpu_max,
        temperatures_c=temps,
        temperature_limits_c=limits,
    )


def parse_modes(models: List[str], status: Optional[List[Any]]) -> List[ModeInfo]:
    """Modes from ``nvpmodel.models`` (index = id) and ``nvpmodel.status``."""
    status = list(status or [])
    return [
        ModeInfo(id=i, name=str(name), settable=bool(status[i]) if i < len(status) else True)
        for i, name in enumerate(models)
    ]


def parse_jetpack(board: Any) -> Optional[str]:
    """JetPack release from ``j.board['hardware']['Jetpack']`` when present."""
    board = as_mapping(board)
    hardware = board.get("hardware") if board is not None else None
    value = hardware.get("Jetpack") if isinstance(hardware, Mapping) else None
    return str(value) if value else None


# ---------------------------------------------------------------- reading


class JetsonDevice:
    """Reads and controls one board through an open ``jtop`` object."""

    def __init__(self, j: Any, unavailable_error: type = Exception) -> None:
        self._j = j
        # jetson-stats raises JtopException for a refused request (e.g. unknown mode)
        self._error = unavailable_error

    def wait(self) -> None:
        """Block until jtop delivers its next update; JtopUnavailable once the service is gone
        (``ok()`` returns False, or re-raises the error its reader thread stored: jetson-stats
        raises JtopException("Lost connection with jtop server") there)."""
        try:
            running = self._j.ok()
        except (self._error, OSError, EOFError) as exc:
            # a service stopped mid-run: the client's reader thread stores BrokenPipeError,
            # ConnectionRefusedError or EOFError as often as JtopException
            raise _lost(exc)
        if not running:
            raise ConnectionLost("the connection to the jtop service was lost")

    def check_connection(self) -> None:
        """JtopUnavailable once the client's reader thread has ended (the service stopped or
        restarted): the attributes ``read`` returns then stay frozen at their last update, and
        a measurement would record clocks and power it never saw."""
        alive = getattr(self._j, "is_alive", None)  # jetson-stats' jtop is a Thread
        if callable(alive) and not alive():
            try:
                self._j.ok(spin=True)  # re-raises the error the reader thread stored
            except (self._error, OSError, EOFError) as exc:
                raise _lost(exc)
            raise ConnectionLost("the connection to the jtop service was lost")

    def has_nvpmodel(self) -> bool:
        return self._j.nvpmodel is not None

    def modes(self) -> List[ModeInfo]:
        nvp = self._j.nvpmodel
        return parse_modes(list(nvp.models), list(nvp.status))

    def current_mode(self) -> ModeState:
        nvp = self._j.nvpmodel
        running = nvp.is_running
        # 4.x/7.x document is_running() as a method; tolerate a plain attribute as well
        running = running() if callable(running) else running
        return ModeState(id=int(nvp.id), name=str(nvp.name), switching=bool(running))

    def request_mode(self, mode_id: int) -> None:
        """Ask nvpmodel for ``mode_id`` by plain assignment: jtop then never passes force."""
        try:
            self._j.nvpmodel = int(mode_id)
        except self._error as exc:
            raise ModeRequestRefused(str(exc))
        except (OSError, EOFError) as exc:  # the request goes to a service that is gone
            raise _lost(exc)

    def switch_failed(self, mode_id: int) -> bool:
        """True when the service reports that its last switch to ``mode_id`` failed: jtop
        marks the mode False in ``nvpmodel.status`` once ``nvpmodel -m ID`` printed an NVPM
        ERROR line, exited non-zero, or did not return within jtop's own timeout (4 s, tried
        5 times). Only meaningful for a mode that was settable before it was requested."""
        status = list(self._j.nvpmodel.status or [])
        return mode_id < len(status) and not status[mode_id]

    def jetson_clocks(self) -> Optional[bool]:
        jc = self._j.jetson_clocks
        return None if jc is None else bool(jc)

    def set_jetson_clocks(self, on: bool) -> None:
        try:
            self._j.jetson_clocks = bool(on)
        except (self._error, OSError, EOFError) as exc:  # a lost service, or no control
            kind = JtopUnavailable if isinstance(exc, self._error) else ConnectionLost
            raise kind("jtop could not set jetson_clocks %s (%s)" % ("on" if on else "off", exc))

    def read(self) -> Reading:
        """The latest update's reading; JtopUnavailable once the service is gone."""
        self.check_connection()
        j = self._j
        return parse_reading(j.power, j.gpu, j.cpu, j.temperature)

    def jetpack(self) -> Optional[str]:
        try:
            return parse_jetpack(self._j.board)
        except Exception:  # board decoding is informational only
            return None


def _lost(exc: BaseException) -> ConnectionLost:
    """The one line of a connection to the jtop service lost with ``exc``."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return ConnectionLost("the connection to the jtop service was lost (%s)" % detail)


def _forget_connections(j: Any) -> None:
    """Before client ``j`` starts, drop the connections to its service that earlier clients
    left cached: jetson-stats talks through multiprocessing proxies, which share one per thread
    and address (an open client's proxies keep theirs), so after a restart of the service a new
    client would reuse a broken one (BrokenPipeError). The standard library drops them so when
    a manager shuts down (``BaseManager._finalize_manager``)."""
    from multiprocessing.managers import BaseProxy

    address = getattr(getattr(j, "_broadcaster", None), "address", None)
    cache, mutex = (getattr(BaseProxy, "_address_to_local", None),
                    getattr(BaseProxy, "_mutex", None))
    if cache is None or mutex is None:  # a Python whose managers keep them otherwise
        return
    with mutex:
        cache.pop(address, None)


class ModeRequestRefused(Exception):
    """jtop refused a mode request (unknown id, service error)."""


@contextlib.contextmanager
def open_device(jtop_module: Any = None, interval_s: float = 0.5) -> Iterator[JetsonDevice]:
    """Open jtop and yield a ``JetsonDevice``; ``JtopUnavailable`` when jtop cannot be used.

    ``jtop_module`` is an object with the ``jtop`` package's documented names ``jtop`` and
    ``JtopException``; None imports the real package.
    """
    if jtop_module is None:
        try:
            import jtop as jtop_module  # type: ignore[no-redef]
        except ImportError:
            raise JtopUnavailable("jetson-stats is not installed (pip install 'edge-agent[jetson]')")
    version = str(getattr(jtop_module, "__version__", ""))
    if version and _release(version) < MIN_JTOP_RELEASE:
        raise JtopUnavailable("jetson-stats %s is older than 4.3 (it reports every power mode as "
                              "settable); pip install -U 'jetson-stats>=4.3'" % version)
    error = getattr(jtop_module, "JtopException", Exception)
    try:
        # the client itself refuses a service of another minor version (JtopException)
        j = jtop_module.jtop(interval=interval_s)
        _forget_connections(j)
        j.__enter__()
    except error as exc:  # its messages hold line breaks: one log line each
        reason = "jtop service not reachable (%s)" % " ".join(str(exc).split())
        raise JtopUnavailable(reason + "; is jtop.service running here?", reason)
    except OSError as exc:
        raise JtopUnavailable("jtop service not reachable (%s)" % exc)
    try:
        device = JetsonDevice(j, unavailable_error=error)
        if not device.has_nvpmodel():
            raise NoPowerModes("this board has no nvpmodel power modes")
        yield device
    finally:
        j.__exit__(None, None, None)
