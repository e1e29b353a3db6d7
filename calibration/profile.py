"""The calibration profile on disk: measured capacity per board, L4T release, power mode and
engine, as versioned JSON.

Format (version 1): ``{"format": "edge-agent-calibration-profile", "version": 1, "entries":
[...], "unavailable": [...]}``, each entry a ``ProfileEntry``, each unavailable mode an
``UnavailableMode`` (fields below; docs/formats.md has an example).

An entry is keyed by (board, l4t, power_mode, stage_sha256, backend, precision, engine
threads) (``calibration.profile_match``: the thread count only where it sets the speed,
onnxruntime on the CPU); a new measurement replaces the entry with the same key, and entries
of different thread counts live side by side. An entry whose bundle stage now has another
hash is *stale* (``stale_entries``): ``lookup_capacity`` never returns it, since it is keyed by
the current hash. Writes are atomic (temporary file, fsync, rename) under a ``filelock`` lock
next to the file, so concurrent calibrations on one device do not lose each other's entries.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from agent.config.checks import MAX_INTERVAL_S, RATE_RANGE, check_rate, short
from agent.config.fields import is_finite
from agent.config.jsonfile import loads
from agent.errors import UsageError
from agent.ops.atomic import atomic_open
from agent.ops.lockfile import folder_owners_filelock
from calibration.active_mode import current_power_mode  # noqa: F401 - read through here too
from calibration.profile_match import cpu_entry, entry_threads, find_entry

log = logging.getLogger(__name__)

PROFILE_FORMAT = "edge-agent-calibration-profile"
PROFILE_VERSION = 1
# Seconds to wait for another process holding the profile lock before giving up.
LOCK_TIMEOUT_S = 30.0
PROFILE_MAX_BYTES = 64 * 1024 * 1024  # entries are ~1 kB; far beyond this is not a profile


class ProfileError(UsageError):
    """A calibration profile is malformed or cannot be read; names the file and field."""


@dataclass(frozen=True)
class ProfileEntry:
    """One stage engine measured in one power mode on one board."""

    board: str  # board model (calibration.host.HostIdentity.board)
    l4t: str  # L4T release, "none" off-Jetson
    power_mode: str  # nvpmodel name ("MAXN", "15W") or the CPU-path mode name
    stage: int  # 1-based stage index in the bundle
    stage_sha256: str  # sha256 of the stage's ONNX file: the engine identity with backend/precision
    backend: str  # backend actually used: "tensorrt" or "onnxruntime"
    precision: str  # "fp32" | "fp16" | "int8"
    flops: float  # alpha of the stage (multiply-accumulates per task)
    samples: int  # timed runs behind the statistics
    service_time_median_s: float  # median time of one run (batch 1)
    service_time_p90_s: float  # 90th percentile of one run
    capacity_flops: float  # mu = flops / median service time
    measured_at: str  # UTC ISO-8601 time of the measurement
    measured_seconds: float = 0.0  # length of the timed phase
    power_mode_id: Optional[int] = None  # nvpmodel id; None on the CPU path
    jetpack: Optional[str] = None  # JetPack release when known (informational)
    bundle: str = ""  # bundle name the stage came from
    power_avg_w: Optional[float] = None  # mean total board power while timing; None without sensors
    clocks: Dict[str, float] = field(default_factory=dict)  # clock readings (kHz), see module doc
    temperature_peak_c: Dict[str, float] = field(default_factory=dict)  # peak per sensor
    throttled: bool = False  # a clock cap dropped or a sensor reached its limit while timing
    jetson_clocks: Optional[bool] = None  # jetson_clocks state during the run; None if unknown
    engine: Dict[str, Any] = field(default_factory=dict)  # Engine.info (backend, providers, device)

    def key(self) -> Tuple[str, str, str, str, str, str, Optional[int]]:
        """Identity of the entry: a newer measurement with the same key replaces it. The last
        part is the engine thread count where it sets the speed, else None
        (``calibration.profile_match.entry_threads``)."""
        return (self.board, self.l4t, self.power_mode, self.stage_sha256, self.backend,
                self.precision, entry_threads(self))


@dataclass(frozen=True)
class UnavailableMode:
    """A power mode that could not be made active (it is skipped, and shown by ``--show``)."""

    board: str
    l4t: str
    power_mode: str
    reason: str
    measured_at: str
    power_mode_id: Optional[int] = None

    def key(self) -> Tuple[str, str, str]:
        return (self.board, self.l4t, self.power_mode)


@dataclass(frozen=True)
class Profile:
    """All entries of one profile file."""

    entries: Tuple[ProfileEntry, ...] = ()
    unavailable: Tuple[UnavailableMode, ...] = ()


# ---------------------------------------------------------------- parsing / serialising

_REQUIRED = {
    "board": str,
    "l4t": str,
    "power_mode": str,
    "stage": int,
    "stage_sha256": str,
    "backend": str,
    "precision": str,
    "flops": float,
    "samples": int,
    "service_time_median_s": float,
    "service_time_p90_s": float,
    "capacity_flops": float,
    "measured_at": str,
}


def _check(value: Any, kind: type, where: str) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_finite(value):
            raise ProfileError("%s: must be a finite number, got %s" % (where, short(value)))
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError("%s: must be an integer, got %s" % (where, short(value)))
        return value
    if not isinstance(value, kind):
        raise ProfileError("%s: must be a %s, got %r" % (where, kind.__name__, value))
    if kind is str and any(ord(c) < 32 or ord(c) == 127 for c in value):  # escapes: shown raw
        raise ProfileError("%s: must be printable text, got %r" % (where, value))
    return value


def _parse_entry(obj: Any, where: str) -> ProfileEntry:
    if not isinstance(obj, dict):
        raise ProfileError("%s: must be an object, got %r" % (where, obj))
    values: Dict[str, Any] = {}
    for name, kind in _REQUIRED.items():
        if name not in obj:
            raise ProfileError("%s: missing field %r" % (where, name))
        values[name] = _check(obj[name], kind, "%s.%s" % (where, name))
    if values["stage"] < 1:
        raise ProfileError("%s.stage: must be >= 1, got %d" % (where, values["stage"]))
    # what calibrate measures is positive and bounded as the node config's emulated mu and
    # intervals are: anything else is a damaged or hand-edited file
    for name, hi in (("service_time_median_s", MAX_INTERVAL_S), ("service_time_p90_s", MAX_INTERVAL_S),
                     ("flops", float("inf"))):
        if not 0 < values[name] <= hi:
            raise ProfileError("%s.%s: must be > 0%s, got %r" % (
                where, name, " and at most %g" % hi if values[name] > 0 else "", values[name]))
    # mu goes out in the agent's reports, where a peer refuses one below MIN_RATE (1 FLOP/s)
    check_rate(values["capacity_flops"], where + ".capacity_flops", ProfileError)
    if values["samples"] < 1:
        raise ProfileError("%s.samples: must be >= 1, got %d" % (where, values["samples"]))
    for name in ("measured_seconds",):
        if name in obj:
            values[name] = _check(obj[name], float, "%s.%s" % (where, name))
            if values[name] < 0:
                raise ProfileError("%s.%s: must be >= 0, got %r" % (where, name, values[name]))
    for name in ("power_mode_id",):
        if obj.get(name) is not None:
            values[name] = _check(obj[name], int, "%s.%s" % (where, name))
    for name in ("jetpack", "bundle"):
        if obj.get(name) is not None:
            values[name] = _check(obj[name], str, "%s.%s" % (where, name))
    if obj.get("power_avg_w") is not None:
        values["power_avg_w"] = _check(obj["power_avg_w"], float, where + ".power_avg_w")
    for name in ("clocks", "temperature_peak_c"):
        raw = obj.get(name, {})
        if not isinstance(raw, dict):
            raise ProfileError("%s.%s: must be an object, got %r" % (where, name, raw))
        values[name] = {str(k): _check(v, float, "%s.%s.%s" % (where, name, k)) for k, v in raw.items()}
    if "throttled" in obj:
        values["throttled"] = _check(obj["throttled"], bool, where + ".throttled")
    if obj.get("jetson_clocks") is not None:
        values["jetson_clocks"] = _check(obj["jetson_clocks"], bool, where + ".jetson_clocks")
    engine = obj.get("engine", {})
    if not isinstance(engine, dict):
        raise ProfileError("%s.engine: must be an object, got %r" % (where, engine))
    values["engine"] = dict(engine)
    return ProfileEntry(**values)


def _parse_unavailable(obj: Any, where: str) -> UnavailableMode:
    if not isinstance(obj, dict):
        raise ProfileError("%s: must be an object, got %r" % (where, obj))
    values = {}
    for name in ("board", "l4t", "power_mode", "reason", "measured_at"):
        if name not in obj:
            raise ProfileError("%s: missing field %r" % (where, name))
        values[name] = _check(obj[name], str, "%s.%s" % (where, name))
    if obj.get("power_mode_id") is not None:
        values["power_mode_id"] = _check(obj["power_mode_id"], int, where + ".power_mode_id")
    return UnavailableMode(**values)


def parse_profile(obj: Any, source: str = "profile") -> Profile:
    """Validate a decoded profile document; errors name ``source`` and the field."""
    if not isinstance(obj, dict):
        raise ProfileError("%s: must be a JSON object" % source)
    if obj.get("format") != PROFILE_FORMAT:
        raise ProfileError("%s: format: expected %r, got %r" % (source, PROFILE_FORMAT, obj.get("format")))
    version = obj.get("version")
    if version != PROFILE_VERSION:
        raise ProfileError("%s: version: this edge-agent reads version %d, got %r" % (source, PROFILE_VERSION, version))
    entries = obj.get("entries", [])
    unavailable = obj.get("unavailable", [])
    if not isinstance(entries, list):
        raise ProfileError("%s: entries: must be a list" % source)
    if not isinstance(unavailable, list):
        raise ProfileError("%s: unavailable: must be a list" % source)
    return Profile(
        entries=tuple(_parse_entry(e, "%s: entries[%d]" % (source, i)) for i, e in enumerate(entries)),
        unavailable=tuple(
            _parse_unavailable(u, "%s: unavailable[%d]" % (source, i)) for i, u in enumerate(unavailable)
        ),
    )


def profile_to_obj(profile: Profile) -> Dict[str, Any]:
    """The JSON document for ``profile`` (what ``parse_profile`` reads back)."""
    return {
        "format": PROFILE_FORMAT,
        "version": PROFILE_VERSION,
        "entries": [asdict(e) for e in profile.entries],
        "unavailable": [asdict(u) for u in profile.unavailable],
    }


# ---------------------------------------------------------------- reading / writing


def load_profile(path: str) -> Profile:
    """Read and validate a profile file; a missing file is a ``ProfileError``."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; only a regular file is read
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ProfileError("%s: not a regular file; give the calibration profile's JSON "
                                   "file" % path)
            raw = f.read(PROFILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ProfileError("%s: no such calibration profile (run edge-agent calibrate first)" % path)
    except OSError as exc:
        raise ProfileError("%s: cannot read: %s" % (path, exc.strerror or exc))
    if len(raw) > PROFILE_MAX_BYTES:
        raise ProfileError("%s: larger than %d bytes; not a calibration profile"
                           % (path, PROFILE_MAX_BYTES))
    try:  # UnicodeDecodeError is a ValueError: a binary file is "not JSON" too
        obj = loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError("%s: not valid JSON: %s" % (path, exc))
    except ValueError as exc:  # an integer of more digits than any field holds
        raise ProfileError("%s: %s" % (path, exc))
    except RecursionError:
        raise ProfileError("%s: not valid JSON here (nested too deep)" % path) from None
    return parse_profile(obj, path)


def _lock(path: str):
    return folder_owners_filelock(os.path.abspath(path) + ".lock", LOCK_TIMEOUT_S)


def merge_profile(
    base: Profile,
    entries: Iterable[ProfileEntry] = (),
    unavailable: Iterable[UnavailableMode] = (),
) -> Profile:
    """``base`` with ``entries``/``unavailable`` added; same keys are replaced. A mode measured
    successfully is no longer listed as unavailable. One recorded unavailable keeps what was
    measured in it: a reboot-only mode is measured after booting into it (``--modes current``)
    and is unavailable to every later run that switches, and a switch that timed out once
    says nothing against the measurements."""
    merged = {e.key(): e for e in base.entries}
    gone = {u.key(): u for u in base.unavailable}
    for e in entries:
        merged[e.key()] = e
        gone.pop((e.board, e.l4t, e.power_mode), None)
    for u in unavailable:
        gone[u.key()] = u
    ordered = sorted(merged.values(), key=lambda e: (e.board, e.l4t, e.power_mode, e.bundle,
                                                     e.stage, e.backend, entry_threads(e) or 0))
    return Profile(entries=tuple(ordered),
                   unavailable=tuple(sorted(gone.values(), key=lambda u: u.key())))


def update_profile(
    path: str,
    entries: Iterable[ProfileEntry] = (),
    unavailable: Iterable[UnavailableMode] = (),
) -> Profile:
    """Merge new measurements into the profile at ``path`` (created if missing), atomically and
    under the profile's file lock. Returns the profile as written."""
    import filelock

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        with _lock(path):
            base = load_profile(path) if os.path.exists(path) else Profile()
            profile = merge_profile(base, entries, unavailable)
            obj = profile_to_obj(profile)
            # what is written must read back: a bad entry refused here, never a damaged file
            parse_profile(json.loads(json.dumps(obj)), "%s (as it would be written)" % path)
            with atomic_open(path, "w", perms=0o600) as f:  # owner-only, as always created
                f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
                owner = os.stat(directory)  # root's calibrate: the folder owner's file, for
                if os.geteuid() == 0 and owner.st_uid != 0:  # the agent (fchown: no link race)
                    os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
            return profile
    except filelock.Timeout:
        raise ProfileError("%s: locked by another process for more than %.0f s" % (path, LOCK_TIMEOUT_S))


# ---------------------------------------------------------------- queries


def stale_entries(profile: Profile, bundle_name: str, stage_hashes: Mapping[int, str]) -> List[ProfileEntry]:
    """Entries of bundle ``bundle_name`` whose stage now has another ONNX hash (the engine
    changed since they were measured). ``stage_hashes`` maps stage index -> current sha256."""
    return [e for e in profile.entries if e.bundle == bundle_name and e.stage in stage_hashes
            and stage_hashes[e.stage] != e.stage_sha256]


def lookup_capacity(profile_path: Optional[str], stage: Any, backend: str, precision: str,
                    power_mode: Optional[str] = None, host_identity: Any = None,
                    threads: Optional[int] = None) -> Optional[float]:
    """Measured capacity mu (FLOP/s) of ``stage``'s engine on this device, or None.

    ``stage`` is an ``engines.bundle.StageSpec`` (its ``sha256`` identifies the engine together
    with ``backend`` -- the backend actually used, "tensorrt" or "onnxruntime" --,
    ``precision`` and, on the CPU, ``threads``, the engine's ``engine_threads``; None: not said,
    ``find_entry``). ``power_mode`` defaults to the mode active now. Returns None when the
    profile file does not exist or holds no entry for this board, L4T release, mode and engine
    (an entry measured for a previous version of the stage does not match: it is stale; nor
    does one of another thread count), and, logged at WARNING with the fix, on a Jetson whose
    active mode jtop cannot say (``PowerModeUnknown``). A CPU entry recording no thread count
    is used for any, with a WARNING. A malformed profile raises ``ProfileError``.
    ``host_identity`` (a ``HostIdentity``) defaults to this machine's.
    """

    from calibration import host
    from calibration.jtop_adapter import PowerModeUnknown

    if not profile_path or not os.path.exists(profile_path):
        return None
    profile = load_profile(profile_path)
    ident = host_identity if host_identity is not None else host.read_host_identity()
    try:
        mode = power_mode if power_mode is not None else current_power_mode()
    except PowerModeUnknown as exc:  # no entry is right for a mode not known: time the engine
        log.warning("%s: no entry used for stage %d: %s", profile_path, stage.index, exc)
        return None
    entry = find_entry(profile, ident.board, ident.l4t, mode, stage.sha256, backend, precision,
                       threads)
    if entry is None:
        return None
    if threads is not None and cpu_entry(entry) and entry_threads(entry) is None:
        log.warning("%s: stage %d in %s: the entry records no engine thread count; used for "
                    "engine_threads %d (calibrate again with --threads %d to record it)",
                    profile_path, stage.index, mode, threads, threads)
    if entry.throttled:
        log.warning("%s: stage %d in %s was measured while throttled; its mu may be low "
                    "(calibrate again with the board cool)", profile_path, stage.index, mode)
    # mu = flops / service time with the stage's flops now: a manifest whose count changed
    # for the same engine file keeps the time measured, not a mu of the old count
    mu = float(stage.flops) / entry.service_time_median_s
    if not RATE_RANGE[0] <= mu <= RATE_RANGE[1]:  # the wire's range: a peer refuses less
        raise ProfileError("%s: stage %d in %s: flops / service_time_median_s = %.3g FLOP/s, outside "
                           "[%g, %g]; calibrate again" % ((profile_path, stage.index, mode, mu)
                                                          + RATE_RANGE))
    if abs(entry.capacity_flops * entry.service_time_median_s / entry.flops - 1.0) > 0.01:
        log.warning("%s: stage %d in %s: capacity_flops %.3g is not flops / service_time_median_s; "
                    "mu comes from service_time_median_s (a hand edit of capacity_flops does "
                    "nothing)", profile_path, stage.index, mode, entry.capacity_flops)
    return mu
