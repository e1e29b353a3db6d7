"""``edge-agent calibrate``: measure each stage engine's capacity mu per power mode into the
device's calibration profile, or print the profile as a table with ``--show``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Set, Tuple

from agent.commands.profile import THREADS_MAX, threads_arg
from agent.config.checks import MAX_INTERVAL_S
from agent.errors import UsageError
from agent.ops.files import FileFault, check_output_file
from agent.ops.running import agents_running_text, running_agents
from agent.ops.state import DEFAULT_STATE_DIR, default_state_dir

HELP = "measure capacity (FLOP/s) per power mode and stage engine into a calibration profile"

PROFILE_NAME = "calibration.json"


# the longest --seconds, --warmup and --switch-timeout: a day, as the node config's intervals
# (an infinite or astronomic one would keep the board out of service for good)
MAX_SECONDS = MAX_INTERVAL_S


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError("must be > 0 and at most %d (a day), got %r"
                                         % (MAX_SECONDS, text))
    return value


def _stages(text: str) -> Tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.replace(" ", ",").split(",") if p)
    except ValueError:
        raise argparse.ArgumentTypeError("expected stage numbers like 1,3, got %r" % text)
    if not values:
        raise argparse.ArgumentTypeError("expected at least one stage number")
    # a stage named twice is measured once (its second entry would only replace the first)
    return tuple(sorted(set(values), key=values.index))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", help="model bundle directory (with --show: mark stale entries)")
    parser.add_argument(
        "--stages",
        type=_stages,
        default=None,
        help="stages to measure, e.g. 1,3 (default: all)",
    )
    parser.add_argument(
        "--modes",
        default="all",
        help="power modes: all (default), current, or nvpmodel ids like 0,2; without jtop: the one CPU mode",
    )
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=10.0,
        help="timed seconds per stage and mode (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=_positive,
        default=2.0,
        help="warm-up seconds per stage and mode (default 2)",
    )
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"])
    # int8 is refused here as by the node config and the engines: no INT8 calibration cache
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                        help="int8 is refused with its reason")
    parser.add_argument(
        "--threads",
        type=threads_arg,
        default=1,
        help="engine threads, as in the agents' engine_threads: 1..%d (default 1)" % THREADS_MAX,
    )
    parser.add_argument("--cache-dir", default=None,
                        help="TensorRT plan cache directory (default $CACHE_DIRECTORY/trt, else "
                        "~/.cache/edge-agent/trt)")
    parser.add_argument(
        "--switch-timeout",
        type=_positive,
        default=60.0,
        help="seconds for a mode to become active (default 60)",
    )
    parser.add_argument(
        "--state-dir",
        # systemd's StateDirectory= (the calibrate unit) first
        default=default_state_dir(os.environ),
        help="state directory (default $STATE_DIRECTORY, else %s)" % DEFAULT_STATE_DIR,
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="profile file (default: STATE_DIR/%s)" % PROFILE_NAME,
    )
    parser.add_argument("--show", action="store_true", help="print the profile as a table and exit")
    parser.add_argument("--force", action="store_true",
                        help="measure even while an agent of this state directory runs (it "
                             "competes for the CPU and GPU and skews the timings)")


def _fmt(value: Optional[float], scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else "%.*f" % (digits, value * scale)


def format_table(prof, stale: Set[tuple]) -> str:
    """The profile as text: one block per board/L4T release, one row per mode and stage."""
    headers = [
        "mode",
        "stage",
        "backend",
        "median ms",
        "p90 ms",
        "mu FLOP/s",
        "power W",
        "GPU MHz",
        "peak C",
        "throttled",
        "measured",
        "note",
    ]
    lines: List[str] = []
    groups = sorted({(e.board, e.l4t) for e in prof.entries} | {(u.board, u.l4t) for u in prof.unavailable})
    for board, l4t in groups:
        rows = []
        for e in prof.entries:
            if (e.board, e.l4t) != (board, l4t):
                continue
            gpu = e.clocks.get("gpu_max_khz")
            rows.append(
                [
                    e.power_mode if e.power_mode_id is None else "%s (%d)" % (e.power_mode, e.power_mode_id),
                    "%d" % e.stage,
                    "%s/%s" % (e.backend, e.precision),
                    _fmt(e.service_time_median_s, 1e3),
                    _fmt(e.service_time_p90_s, 1e3),
                    "%.3g" % e.capacity_flops,
                    _fmt(e.power_avg_w, 1.0, 1),
                    _fmt(gpu, 1e-3, 0) if gpu is not None else "-",
                    _fmt(max(e.temperature_peak_c.values()), 1.0, 1) if e.temperature_peak_c else "-",
                    "yes" if e.throttled else "no",
                    e.measured_at,
                    "STALE (stage file changed)" if e.key() in stale else "",
                ]
            )
        lines.append("board: %s   L4T: %s" % (board, l4t))
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for u in prof.unavailable:
            if (u.board, u.l4t) == (board, l4t):
                ident = u.power_mode if u.power_mode_id is None else "%s (%d)" % (u.power_mode, u.power_mode_id)
                lines.append("unavailable: %s: %s (%s)" % (ident, u.reason, u.measured_at))
        lines.append("")
    if not groups:
        lines.append("(no entries)")
    return "\n".join(lines).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    from calibration import profile as profile_mod
    from calibration.jtop_adapter import JtopUnavailable
    from calibration.runner import CalibrationConfig, CalibrationInterrupted, calibrate

    profile_path = args.profile or os.path.join(args.state_dir, PROFILE_NAME)
    if os.path.isdir(profile_path):  # refused before a FOLDER.lock is made beside it
        raise UsageError("--profile: %s is a directory; give the profile's file path"
                         % profile_path)
    if args.show:
        prof = profile_mod.load_profile(profile_path)
        stale: Set[tuple] = set()
        if args.bundle:
            from engines.bundle import load_bundle

            bundle = load_bundle(args.bundle)
            hashes = {s.index: s.sha256 for s in bundle.stages}
            stale = {e.key() for e in profile_mod.stale_entries(prof, bundle.name, hashes)}
        sys.stdout.write(format_table(prof, stale))
        return 0
    if not args.bundle:
        raise UsageError("--bundle DIR is required (or use --show)")
    from engines.loader import check_precision

    check_precision(args.precision)
    agents = running_agents(args.state_dir)
    if agents and not args.force:
        raise UsageError(agents_running_text(agents, args.state_dir))
    if agents:  # --force: measured anyway, said in the run's log (the timings may be low)
        print("edge-agent calibrate: warning: measuring anyway (--force): %s"
              % agents_running_text(agents, args.state_dir).split(": stop")[0], file=sys.stderr)
    try:
        os.makedirs(args.state_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError("cannot create state directory %s: %s; pass --state-dir" % (args.state_dir, exc.strerror))
    _preflight(profile_path)
    cfg = CalibrationConfig(
        bundle_dir=args.bundle,
        profile_path=profile_path,
        state_dir=args.state_dir,
        stages=args.stages,
        modes=args.modes,
        seconds=args.seconds,
        warmup_s=args.warmup,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        cache_dir=args.cache_dir,
        switch_timeout_s=args.switch_timeout,
    )
    try:
        result = calibrate(cfg)
    except JtopUnavailable as exc:  # lost mid-run; before the run it means the CPU path
        _error("%s; measurements so far are in %s, and the next run restores the original "
               "power mode" % (exc, profile_path))
        return 1
    except OSError as exc:  # e.g. the profile's folder cannot be written
        _error("cannot write %s: %s; run as a user that can (the service user: sudo -u "
               "edge-agent ...) or give another --profile or --state-dir; the original power "
               "mode is restored (by the next run if not now)"
               % (exc.filename or profile_path, exc.strerror or exc))
        return 1
    except CalibrationInterrupted as exc:
        print(
            "edge-agent calibrate: %s; original power mode restored" % exc,
            file=sys.stderr,
        )
        return 128 + exc.signum
    print(
        "%d entries written to %s (%d modes unavailable, %d stale entries)"
        % (
            len(result.entries),
            profile_path,
            len(result.unavailable),
            len(result.stale),
        )
    )
    return 1 if result.restore_error else 0


def _preflight(profile_path: str) -> None:
    """Refuse, before any power mode is switched or engine built (minutes on a Jetson), an
    existing profile that cannot be read or is damaged: the run merges into it, so it would
    only fail at the first write, after the first stage's measurement. So is a profile path
    that cannot be written (its folder a file, a read-only file system)."""
    from calibration import profile as profile_mod

    try:
        check_output_file(profile_path, "--profile")
    except FileFault as exc:
        raise UsageError("%s; calibrate writes its measurements there: give another --profile or "
                         "--state-dir, or run as a user that can write it" % exc)
    if os.path.lexists(profile_path):
        try:
            profile_mod.load_profile(profile_path)
        except profile_mod.ProfileError as exc:
            raise UsageError("%s; calibrate adds its entries to this profile: repair it or move "
                             "it away (or give another --profile)" % exc)


def _error(text: str) -> None:
    """The run's one error line (with journald's error priority under systemd)."""
    from agent.cli import error_line, stderr_is_journal

    print(error_line("calibrate", text, stderr_is_journal()), file=sys.stderr)
