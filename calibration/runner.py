"""One calibration run: for each requested power mode, make it active (Jetson) and time each
stage engine of a bundle; merge the results into the calibration profile.

On a Jetson with jetson-stats the modes are nvpmodel modes switched through jtop; the original
mode is saved to the state directory before the first switch and restored on every way out
(normal end, exception, SIGINT/SIGTERM/SIGHUP -- which are turned into
``CalibrationInterrupted`` while a run is in progress), and by the next run if this one died. Without jtop (CI, a
workstation) there is one mode, named after the CPU governor and frequency, measured the same
way; a Jetson whose jtop service cannot be reached is refused (``refuse_cpu_path_on_jetson``).
Results are written after each stage, so an interrupted run keeps every stage it finished. A
mode during which the jtop service restarted is done again from its switch once the service
answers (``jtop_restart``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, TextIO, Tuple

from agent.errors import UsageError
from agent.ops.lockfile import give_path_to_folder_owner
from calibration import device_lock, host, jtop_adapter, profile
from calibration.jtop_restart import JtopSession, through_restarts
from calibration.measure import CpuSampler, ProgressBar, measure_engine
from calibration.modes import (ORIGINAL_MODE_FILE, ModeKeeper, ModeSwitchFailed, ModeUnavailable,
                              recover_saved_mode)
from calibration.run_entries import known_gpu_caps, make_entry, utc_now

logger = logging.getLogger(__name__)

# Lock file in the state directory: one calibration at a time per state directory (the
# board-wide one, for runs that switch modes, is device_lock's).
RUN_LOCK_FILE = "calibration.lock"


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of one calibration run."""

    bundle_dir: str  # model bundle directory
    profile_path: str  # calibration profile to merge results into
    state_dir: str  # holds the saved original mode and the run lock
    stages: Optional[Tuple[int, ...]] = None  # 1-based stages to measure; None = all
    modes: str = "all"  # "all", "current" or comma-separated nvpmodel ids like "0,2"
    seconds: float = 10.0  # timed phase per stage and mode
    warmup_s: float = 2.0  # warm-up per stage and mode (not timed)
    backend: str = "auto"  # engine backend: auto | tensorrt | onnxruntime
    precision: str = "fp32"  # engine precision: fp32 | fp16
    threads: int = 1  # engine intra-op threads (use the agents' engine_threads)
    cache_dir: Optional[str] = None  # TensorRT plan cache
    switch_timeout_s: float = 60.0  # a mode not verified active by then is marked unavailable
    jtop_interval_s: float = 0.5  # jtop update interval
    # board-wide lock of the runs that switch modes (the command: device_lock.DEVICE_LOCK_PATH)
    device_lock_path: Optional[str] = None


@dataclass
class CalibrationResult:
    """What a run measured and wrote."""

    entries: List[profile.ProfileEntry] = field(default_factory=list)
    unavailable: List[profile.UnavailableMode] = field(default_factory=list)
    stale: List[profile.ProfileEntry] = field(default_factory=list)
    restore_error: Optional[str] = None  # set when the original mode could not be restored
    switched: bool = False  # a power mode switch was begun (the CPU path never switches)
    original_mode_id: Optional[int] = None  # the mode to put back by hand if restoring fails
    failed: List[str] = field(default_factory=list)  # nvpmodel faults (ModeSwitchFailed), 1 line each
    # restored by nvpmodel (jtop gone) on a board whose jetson_clocks was on: turned on again,
    # or why not
    clocks_restored: bool = False
    clocks_error: Optional[str] = None


class CalibrationInterrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived during a run; raised so that the original mode is
    restored (SIGHUP: the SSH session of the shell that started it closed)."""

    def __init__(self, signum: int):
        super().__init__("interrupted by signal %d" % signum)
        self.signum = signum


@contextlib.contextmanager
def _signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Install ``handler`` for SIGINT/SIGTERM/SIGHUP (main thread only; one ignored stays so:
    ``nohup`` keeps a run going when its session closes), put the old ones back."""
    old = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
            try:
                old[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)


class _StopFlag:
    """Signal handler that only records the signal; ``check()`` raises it from plain Python
    code. Raising inside the handler could land in C code (onnxruntime, numpy) that checks
    for signals and drops the error, and the run would go on as if nothing happened."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def handler(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise CalibrationInterrupted(self.signum)


def _defer_signal(signum: int, frame: Any) -> None:
    logger.warning(
        "signal %d received while restoring the original power mode; finishing that first",
        signum,
    )


def parse_modes(text: str) -> Optional[Tuple[int, ...]]:
    """Parse --modes: "all" or "current" -> None; "0,2" -> (0, 2); anything else: UsageError."""
    text = text.strip()
    if text in ("all", "current"):
        return None
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError("--modes: expected all, current or comma-separated mode ids, got %r" % text)
    if any(i < 0 for i in ids):
        raise UsageError("--modes: mode ids are >= 0, got %r" % text)
    return tuple(sorted(set(ids), key=ids.index))  # a mode named twice is switched to once


def _measure_mode(
    ctx: dict, mode_name: str, mode_id: Optional[int], sampler: Any, jc: Optional[bool]
) -> List[profile.ProfileEntry]:
    cfg: CalibrationConfig = ctx["cfg"]
    stages = ctx["stages"]
    entries = []
    for n, stage in enumerate(stages, 1):
        engine = ctx["engines"][stage.index]
        ctx["progress"].start("mode %s | stage %d (%d/%d)" % (mode_name, stage.index, n, len(stages)))
        m = measure_engine(
            engine,
            stage,
            cfg.seconds,
            warmup_s=cfg.warmup_s,
            sampler=sampler,
            progress=ctx["progress"],
            check=ctx["stop"].check,
        )
        ctx["progress"].finish(
            "median %.3f ms, p90 %.3f ms, mu %.3g FLOP/s%s"
            % (
                m.service_time_median_s * 1e3,
                m.service_time_p90_s * 1e3,
                m.capacity_flops,
                ", THROTTLED" if m.throttled else "",
            )
        )
        entry = make_entry(ctx["ident"], mode_name, mode_id, ctx["bundle"], stage, engine, cfg, m, jc)
        # written per stage: SIGINT/SIGTERM during the next stage keeps this one
        profile.update_profile(cfg.profile_path, [entry])
        entries.append(entry)
    return entries


def _jetson_path(ctx: dict, session: JtopSession, result: CalibrationResult) -> None:
    cfg: CalibrationConfig = ctx["cfg"]
    ident: host.HostIdentity = ctx["ident"]
    device = session.device
    keeper = ModeKeeper(device, cfg.state_dir, cfg.switch_timeout_s)
    modes = device.modes()
    ids = parse_modes(cfg.modes)
    if cfg.modes.strip() == "current":  # nothing switched: a restart ends the run (exit 1)
        now = device.current_mode()
        result.entries += _measure_mode(ctx, now.name, now.id, device, device.jetson_clocks())
        return
    if ids is not None:
        by_id = {m.id: m for m in modes}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UsageError(
                "--modes: no power mode with id %s on this board; it has %s"
                % (
                    ",".join(map(str, missing)),
                    ", ".join("%d=%s" % (m.id, m.name) for m in modes),
                )
            )
        modes = [by_id[i] for i in ids]
    caps = known_gpu_caps(cfg, ident)

    def switch_and_measure(mode: Any) -> List[profile.ProfileEntry]:
        keeper.switch(mode, expected_gpu_max_khz=caps.get(mode.name), check=ctx["stop"].check)
        d = session.device  # a new one after a restart of the jtop service
        return _measure_mode(ctx, mode.name, mode.id, d, d.jetson_clocks())

    def reconnected(new: jtop_adapter.JetsonDevice) -> None:
        keeper.device = new  # switches and the final restore go through the new connection

    try:
        for mode in modes:
            result.switched = True  # before: the keeper saves the original, then switches
            try:
                # done again from its switch where the jtop service restarted during it
                entries = through_restarts(
                    session, lambda: switch_and_measure(mode), "calibrating power mode %s (id %d)"
                    % (mode.name, mode.id), cfg.switch_timeout_s, reconnected=reconnected,
                    check=ctx["stop"].check)
            except ModeUnavailable as exc:
                if isinstance(exc, ModeSwitchFailed):  # the run fails; the other modes go on
                    result.failed.append("power mode %s (id %d): %s" % (mode.name, mode.id, exc))
                logger.warning("power mode %s (id %d) unavailable: %s", mode.name, mode.id, exc)
                u = profile.UnavailableMode(ident.board, ident.l4t, mode.name, str(exc), utc_now(), mode.id)
                result.unavailable.append(u)
                profile.update_profile(cfg.profile_path, unavailable=[u])
                continue
            result.entries += entries
    finally:
        with _signals(_defer_signal):
            try:
                keeper.restore()
            except (ModeUnavailable, jtop_adapter.JtopUnavailable) as exc:
                result.restore_error, result.original_mode_id = str(exc), keeper.original_id
                logger.error("could not restore the original power mode (%s); the next calibrate "
                             "run retries, or set it by hand with sudo nvpmodel -m %s", exc,
                             "ID" if keeper.original_id is None else keeper.original_id)
            result.clocks_restored, result.clocks_error = keeper.clocks_restored, keeper.clocks_error


def refuse_cpu_path_on_jetson(exc: jtop_adapter.JtopUnavailable, root: str = "/") -> None:
    """UsageError (exit 2, one line with the fix) when jtop is unavailable (``exc``) on a Jetson,
    an L4T release file under ``root``: its modes can be neither switched nor named, and the CPU
    path's entry would be filed under the Jetson's board, where no agent finds it (or a wrong
    one does). A Jetson whose jtop answers but has no nvpmodel (``NoPowerModes``) is measured
    as one mode, as before."""
    from engines.accelerator import TEGRA_RELEASE, is_jetson

    if isinstance(exc, jtop_adapter.NoPowerModes) or not is_jetson(root):
        return
    raise UsageError("%s on this Jetson (%s): calibrate names and switches power modes through "
                     "it and writes no CPU-path entry here; %s, then run calibrate again"
                     % (exc.reason, TEGRA_RELEASE,
                        jtop_adapter.unreachable_fix(jtop_adapter.current_user())))


def log_cpu_path(exc: jtop_adapter.JtopUnavailable, root: str = "/") -> None:
    """The one line saying why the CPU path is taken: off a Jetson that it is none (jtop's
    absence, and its install hint, are no fault there), on one ``exc``."""
    from engines.accelerator import TEGRA_RELEASE, is_jetson

    if is_jetson(root):
        logger.warning("%s; calibrating the CPU path (one mode)", exc)
    else:
        logger.info("not a Jetson (no %s): calibrating the CPU path (one mode)", TEGRA_RELEASE)


def calibrate(
    cfg: CalibrationConfig,
    jtop_module: Any = None,
    stream: Optional[TextIO] = None,
    root: str = "/",
) -> CalibrationResult:
    """Run a calibration (see the module docstring). ``jtop_module`` is passed to
    ``jtop_adapter.open_device`` (None: the installed jetson-stats); ``root``: where the
    board's identity and L4T release file are read."""
    import filelock

    from engines.loader import load_engine, unloadable
    from engines.bundle import check_measurable, load_bundle

    bundle = load_bundle(cfg.bundle_dir)
    wanted = cfg.stages or tuple(s.index for s in bundle.stages)
    bad = [i for i in wanted if not 1 <= i <= len(bundle.stages)]
    if bad:
        raise UsageError(
            "--stages: bundle %s has stages 1..%d, got %s" % (bundle.name, len(bundle.stages), ",".join(map(str, bad)))
        )
    check_measurable([bundle.stage(i) for i in wanted])
    explicit_ids = parse_modes(cfg.modes)
    os.makedirs(cfg.state_dir, exist_ok=True)
    ident = host.read_host_identity(root)
    result = CalibrationResult()
    lock = filelock.FileLock(os.path.join(cfg.state_dir, RUN_LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise UsageError("another calibration is running (state directory %s is locked)" % cfg.state_dir)
    try:
        give_path_to_folder_owner(lock.lock_file)  # root's run: the service user's next opens it
        stop = _StopFlag()
        with _signals(stop.handler), contextlib.ExitStack() as stack:
            device, session = None, JtopSession(jtop_module, cfg.jtop_interval_s)
            try:
                device = stack.enter_context(session).device
            except jtop_adapter.JtopUnavailable as exc:
                if os.path.exists(os.path.join(cfg.state_dir, ORIGINAL_MODE_FILE)):
                    # a crashed run's mode: put back with nvpmodel itself, under the board lock
                    if cfg.device_lock_path:
                        stack.enter_context(device_lock.hold(cfg.device_lock_path))
                    recover_saved_mode(None, cfg.state_dir, cfg.switch_timeout_s, exc)
                if explicit_ids is not None:
                    raise UsageError("--modes %s needs jetson-stats' jtop service: %s" % (cfg.modes, exc))
                refuse_cpu_path_on_jetson(exc, root)
                log_cpu_path(exc, root)
            if device is not None:
                if cfg.device_lock_path:  # before any mode is read or set
                    stack.enter_context(device_lock.hold(cfg.device_lock_path))
                recover_saved_mode(device, cfg.state_dir, cfg.switch_timeout_s)
            stages = [bundle.stages[i - 1] for i in wanted]
            engines = {}
            for s in stages:
                try:
                    engine = load_engine(s, backend=cfg.backend, threads=cfg.threads,
                                         precision=cfg.precision, cache_dir=cfg.cache_dir)
                except (UsageError, MemoryError, ModuleNotFoundError):
                    raise
                except Exception as exc:  # a stage file this runtime cannot load: one line
                    raise UsageError(unloadable(s, exc)) from None
                engines[s.index] = stack.enter_context(engine)
            ctx = {
                "cfg": cfg,
                "bundle": bundle,
                "stages": stages,
                "engines": engines,
                "ident": ident,
                "progress": ProgressBar(stream if stream is not None else sys.stderr),
                "stop": stop,
            }
            if device is not None:
                ctx["ident"] = host.HostIdentity(ident.board, ident.l4t, device.jetpack())
                _jetson_path(ctx, session, result)
            else:
                result.entries += _measure_mode(ctx, host.read_cpu_mode_name(), None, CpuSampler(), None)
            stop.check()  # a signal during the last write still ends the run as interrupted
    except (CalibrationInterrupted, OSError, jtop_adapter.JtopUnavailable) as exc:
        exc.result = result  # type: ignore[union-attr]  # the command says if a mode was restored
        raise
    finally:
        lock.release()
    written = profile.load_profile(cfg.profile_path)
    result.stale = profile.stale_entries(written, bundle.name, {s.index: s.sha256 for s in bundle.stages})
    for e in result.stale:
        logger.warning("stale profile entry: stage %d of bundle %s in mode %s was measured %s "
                       "for an older stage file (sha256 %s...); recalibrate it", e.stage,
                       e.bundle, e.power_mode, e.measured_at, e.stage_sha256[:12])
    return result
