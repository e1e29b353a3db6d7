"""``edge-agent calibrate``: measure each stage engine's capacity mu per power mode into the
device's calibration profile, or print the profile as a table with ``--show``."""

from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace
from typing import Tuple

from agent.commands.calibrate_checks import (check_profile_place, make_state_dir,
                                             write_fault)
from agent.commands.profile import THREADS_MAX, threads_arg
from agent.config.checks import MAX_INTERVAL_S
from agent.errors import UsageError
from agent.ops.running import agents_running_text, running_agents
from agent.ops.state import DEFAULT_STATE_DIR, PROFILE_NAME, default_state_dir

HELP = "measure capacity (FLOP/s) per power mode and stage engine into a calibration profile"



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
    parser.add_argument("--bundle", help="model bundle directory (with --show: list its stages, "
                        "found by their stage files, and its stale entries)")
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
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime"],
                        help="engine backend (default auto: native TensorRT where its Python "
                             "package is installed, else onnxruntime)")
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
        help="seconds for a mode to become active, and for a jtop service that went away "
             "mid-run (restarting) to answer again (default 60)",
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


def run(args: argparse.Namespace) -> int:
    from calibration import profile as profile_mod
    from calibration.jtop_adapter import JtopUnavailable
    from calibration.device_lock import DEVICE_LOCK_PATH
    from calibration.runner import CalibrationConfig, CalibrationInterrupted, calibrate

    profile_path = args.profile or os.path.join(args.state_dir, PROFILE_NAME)
    what = "--profile" if args.profile else "--state-dir"  # the option the path came from
    if os.path.isdir(profile_path):  # refused before a FOLDER.lock is made beside it
        raise UsageError("%s: %s is a directory; give the profile's file path"
                         % (what, profile_path))
    if args.show:
        from agent.commands.calibrate_show import format_table
        from engines.bundle import load_bundle

        prof = profile_mod.load_profile(profile_path)
        sys.stdout.write(format_table(prof, load_bundle(args.bundle) if args.bundle else None))
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
    make_state_dir(args.state_dir)
    _preflight(profile_path, what, args.state_dir)
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
        device_lock_path=DEVICE_LOCK_PATH,  # one run per board, whatever its --state-dir
    )
    try:
        result = calibrate(cfg)
    except JtopUnavailable as exc:  # lost mid-run; before the run it means the CPU path
        _error("%s; measurements so far are in %s%s" % (exc, profile_path, mode_said(exc)))
        return 1
    except OSError as exc:  # e.g. the profile's folder cannot be written, or is full
        path = exc.filename or profile_path  # a temporary file or lock beside it: the profile
        if os.path.dirname(os.path.abspath(path)) == os.path.dirname(os.path.abspath(profile_path)):
            path = profile_path
        cause, fix = write_fault(exc, os.path.dirname(os.path.abspath(path)))
        _error("cannot write %s: %s; %s%s" % (path, cause, fix, mode_said(exc)))
        return 1
    except CalibrationInterrupted as exc:
        print("edge-agent calibrate: %s%s" % (exc, mode_said(exc)), file=sys.stderr)
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
    if result.failed:  # nvpmodel failed: the board's tool needs a look before the modes count
        _error("nvpmodel could not switch %s; the other modes' entries are in %s%s"
               % ("; ".join(result.failed), profile_path,
                  mode_said(SimpleNamespace(result=result))))  # worded as an early end's
    return 1 if result.restore_error or result.failed else 0


def mode_said(exc: object) -> str:
    """What a run ending early with ``exc`` says of the power mode (``calibrate`` attaches its
    result): nothing where no mode was switched (the CPU path, ``--modes current``), else
    whether the original one is back."""
    result = getattr(exc, "result", None)
    if result is None or not result.switched:
        return ""
    if result.restore_error:
        mode_id = getattr(result, "original_mode_id", None)
        return ("; the original power mode could not be restored (%s): the next calibrate run "
                "restores it, or set it with sudo nvpmodel -m %s"
                % (result.restore_error, "ID" if mode_id is None else mode_id))
    # restored by nvpmodel itself (jtop gone), which unlocks clocks jetson_clocks had locked
    if getattr(result, "clocks_error", None):
        return "; original power mode restored, but %s" % result.clocks_error
    if getattr(result, "clocks_restored", False):
        return "; original power mode and jetson_clocks restored"
    return "; original power mode restored"


def _preflight(profile_path: str, what: str, state_dir: str) -> None:
    """Refuse, before any power mode is switched or engine built (minutes on a Jetson), a
    profile path calibrate cannot write (``calibrate_checks.check_profile_place``; ``what``:
    the option it came from) and an existing profile that cannot be read or is damaged: the
    run merges into it, so it would only fail at the first write, after the first stage's
    measurement."""
    from calibration import profile as profile_mod

    check_profile_place(profile_path, what, state_dir)
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
