"""``edge-agent doctor --config NODE.toml``: the start-up checks ``run`` makes of one node.

Run as the service user (``sudo -u edge-agent ... doctor --config /etc/edge-agent/NODE.toml``), it
finds what would make that agent exit 78 before it is started: a config it cannot read or parse, a
state directory it cannot write, a calibration profile the config names that is not there, a bundle
whose files do not match, a config that does not fit the bundle or whose ``max_message_bytes`` or
``max_queue_bytes`` cannot hold the tensors it receives (``agent.node.limits``), keys it cannot
read or that are unsafe, a knob or placement its policy refuses, a worker whose accelerator =
"required" finds no GPU backend here (no TensorRT, no GPU provider). Each step is the agent's own
start-up code (``agent.node.build``) in the order the agent runs it (the limits, the last part of
``check_config``, as a line of their own after "node bundle"), with the line the agent would print
as the detail, up to the first that fails; nothing is loaded onto an accelerator, no socket
listens (the metrics address and the tcp:// binds are bound and let go at once) and nothing is
written. A worker's ``capacity_profile`` (the last file ``preflight`` checks; no later step
needs it) is a line of its own after "node files", whatever it finds: what ``run``
does with it, and the ``calibrate`` command that makes it when missing (as the service user where
the profile is the service's). A source's ``ipc://`` client endpoint is a line of its own after
"node config": under edge-agent@.service only one in the unit's runtime directory
(/run/edge-agent/NAME/) is reachable by a camera program on the device. A config naming host
or interface names (binds, peers' addresses) gets a "node addresses" line after that
(``agent.ops.doctor_check.check_addresses``): a peer's name that does not resolve here, a bind
name that gives no address, the family each bind name listens on. A state_dir a running agent
holds (``agent.node.statelock``) is a WARN line after "node files" (``run`` exits 78 while it
runs), a metrics_port another process listens on a FAIL after it ("node metrics",
``agent.ops.doctor_metrics``; a WARN where this node's running agent serves there: ``run`` holds
that port before it loads anything), and so is a control, data or client tcp:// port another
process holds, or a bind address none of this machine's ("node binds",
``agent.ops.doctor_binds``; a WARN while this node's agent runs); records or a journal the
service user may not write (root's after a run with sudo) FAIL "node files" with the chown,
judged by mode when doctor runs as root. Each fix fits the fault: a missing profile is
calibrated, an unwritable state_dir made writable.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from agent.errors import UsageError
from agent.ops.doctor import FAIL, OK, WARN, Check
from agent.ops.doctor_binds import check_ipc_binds, check_tcp_binds
from agent.ops.doctor_check import check_addresses
from agent.ops.doctor_metrics import check_metrics_port
from agent.ops.paths import as_service_user

CONFIG_FIX = "fix the file (docs/formats.md, 'Node config'), then run doctor --config again"
# a file the service user may not read or write: the deploy walkthrough's chown lines
ACCESS_FIX = ("give the service user access (the chown lines of docs/deployment.md, step 2), "
              "and run doctor as that user")
STATE_DIR_FIX = ("make state_dir (%s) a directory the service user can write, or point "
                 "state_dir at one; run doctor as that user")
# the agent unit's RuntimeDirectory= for instance NAME, where a local client endpoint goes
UNIT_RUNTIME_DIR = "/run/edge-agent/%s"
# fixes of a preflight fault by the field it names, where its line states none
FIELD_FIX = {"bundle": "copy the bundle again",
             "replay_path": "give replay_path an existing .npz file, or leave it out (the demo "
                            "replay set)"}


def check_node(path: str, mode: Optional[str] = None,
               root: str = "/") -> Tuple[List[Check], Any]:
    """The checks of the node config at ``path`` (one per start-up step, up to the first that
    fails, and a worker's calibration line) and the parsed config (None when it does not load).
    ``mode``: the active power mode (None: read as ``run`` reads it; the config's power_mode
    comes first); ``root``: where the board's identity is read."""
    from agent.config.node import load_config

    if not os.path.lexists(path):  # a wrong path, not a file to fix
        return [Check("node config", FAIL, "%s: no such file" % path,
                      "give the path of the node's config (/etc/edge-agent/NODE.toml)")], None
    try:
        cfg = load_config(path)
    except UsageError as exc:
        return [Check("node config", FAIL, _line(exc), _fix(exc, CONFIG_FIX))], None
    out = [Check("node config", OK, "%s: %s %s, policy %s, bundle %s"
                 % (path, cfg.role, cfg.node_id, cfg.policy, cfg.bundle))]
    if cfg.role == "source" and cfg.client_bind.startswith("ipc://"):
        out.append(check_client_ipc(cfg.client_bind, os.path.splitext(os.path.basename(path))[0]))
    addresses = check_addresses(cfg)  # host names resolved, RESOLVE_WAIT_S at most
    if addresses is not None:
        out.append(addresses)
    got: Dict[str, Any] = {}  # what the steps read (bundle, policy)
    for name, step, fix in _steps(cfg, got):
        failed = None
        try:
            detail = step()
        except UsageError as exc:
            failed = exc
        out.append(Check(name, OK, detail) if failed is None else
                   Check(name, FAIL, _line(failed), fix(failed)))
        if name == "node files" and failed is None:
            held = check_state_lock(cfg)
            bound = (held, check_ipc_binds(cfg), check_metrics_port(cfg),  # None: not held
                     check_tcp_binds(cfg))  # run holds the metrics port, then these
            out += [c for c in bound if c is not None]
        if name == "node files" and cfg.role == "worker":
            out.append(check_profile(cfg, mode, root))
        if failed is not None:
            break
    else:
        if cfg.role == "worker" and cfg.engine_batch_max > 1:
            from agent.ops.doctor_batch import check_batching

            out.append(check_batching(cfg, got["bundle"], got["policy"]))
    return out, cfg


def check_profile(cfg: Any, mode: Optional[str] = None, root: str = "/") -> Check:
    """What ``run`` does with the worker config ``cfg``'s ``capacity_profile``: none named, it
    times its engine at start (WARN); named and missing or not a regular file, it exits 78
    (FAIL, with the calibrate command); unreadable, it exits 78 too; without an entry for each
    stage by the whole key (board, L4T release, mode, stage hash, backend, precision), it times
    that engine (WARN, naming the part that misses); on a Jetson whose jtop cannot be reached,
    the mode is unknown without power_mode (WARN) and the fix is jtop's first; with emulated
    capacity, the file must be a valid profile (run checks it too) but no entry is used."""
    from agent.ops.paths import DEFAULT_USER
    from agent.ops.doctor_calib import node_profile_line
    from agent.ops.doctor_check import access_fix
    from agent.ops.files import FileFault, check_regular_file
    from calibration.jtop_adapter import PowerModeUnknown
    from calibration.profile import current_power_mode
    from engines.accelerator import is_jetson

    name, path, cmd = "node calibration", cfg.capacity_profile, calibrate_command(cfg)
    emulated = ("capacity emulated at %.3g FLOP/s (emulate_capacity_flops)"
                % cfg.emulate_capacity_flops if cfg.emulate_capacity_flops > 0 else "")
    if not path:
        if emulated:
            return Check(name, OK, "no capacity_profile: " + emulated)
        return Check(name, WARN, "no capacity_profile: run times the engine of each stage at "
                     "start (timing_runs %d after warmup_runs %d)" % (cfg.timing_runs, cfg.warmup_runs),
                     "%s, then set capacity_profile = \"%s\" in the config"
                     % (cmd, _unit_profile()))
    try:
        check_regular_file(path, "capacity_profile")  # preflight's check: exit 78 on a fault
    except FileFault as exc:
        if _missing(path):
            fix = "run `%s` first%s" % (cmd, _unit_note(path))
        elif "Permission denied" in str(exc):  # a folder above it is closed to doctor's user
            fix = access_fix(DEFAULT_USER, path)
        else:
            fix = "move it away, then run `%s`" % cmd
        return Check(name, FAIL, "%s; run exits 78 until %s" % (
            _line(exc), "it is made" if _missing(path) else "it is fixed"), fix)
    if emulated:  # no entry is used, but run refuses a profile it cannot read (exit 78)
        from calibration.profile import ProfileError, load_profile
        try:
            load_profile(path)
        except ProfileError as exc:  # run's rule (require_profile_file): unreadable, keep it
            fix = (access_fix(DEFAULT_USER, path) if not os.access(path, os.R_OK)
                   else "move it away, then run `%s`" % cmd)
            return Check(name, FAIL, "%s; run exits 78 until it is fixed" % _line(exc), fix)
        return Check(name, OK, "%s: a valid profile, no entry used: %s" % (path, emulated))
    down = None
    if mode is None:  # as run finds it; on a Jetson also when power_mode is set: calibrate needs jtop
        try:
            mode = current_power_mode(root=root) if not cfg.power_mode or is_jetson(root) else None
        except PowerModeUnknown as exc:
            down = exc
    return node_profile_line(name, path, cfg, cfg.power_mode or mode, root, "run `%s`" % cmd,
                             down)


def check_state_lock(cfg: Any) -> Optional[Check]:
    """A WARN where an agent holds the lock of ``cfg``'s state_dir (``run`` exits 78 while it
    runs: one agent per state_dir), naming its pid and node id; a FAIL where the lock file
    cannot be used; None where it is free. The lock is tried and let go at once."""
    from agent.node.statelock import holder, lock_path, parse_holder

    try:
        held = holder(cfg.state_dir) if os.path.isdir(cfg.state_dir) else None
    except UsageError as exc:  # a FIFO, a link or a file closed to doctor's user at .lock
        return Check("node state lock", FAIL, _line(exc), _files_fix(exc, cfg.state_dir))
    if held is None:
        return None
    pid, node = parse_holder(held)
    mine = node == cfg.node_id
    return Check("node state lock", WARN, "%s is locked by a running agent (pid %s, node %s)%s: "
                 "run exits 78 while it runs" % (lock_path(cfg.state_dir), pid or "unknown",
                                                 node or "unknown", "" if mine else
                                                 ", another node's"),
                 "none if that agent is this node's (stop it before starting another)" if mine
                 else "give each node its own state_dir")


def check_client_ipc(endpoint: str, instance: str) -> Check:
    """Where a source's ``ipc://`` ``client_bind`` is, seen from ``edge-agent@INSTANCE``: /tmp
    and /var/tmp are the unit's own (PrivateTmp=yes), elsewhere the file system is read-only
    (ProtectSystem=strict) or closed to other users, all but its runtime directory
    /run/edge-agent/INSTANCE/, which group edge-agent may enter and whose sockets it may
    connect to (WARN outside it: run by hand the endpoint may well work)."""
    sock = os.path.normpath(endpoint[len("ipc://"):])  # absolute: from the config's folder
    here = UNIT_RUNTIME_DIR % instance
    if sock.startswith(here + "/"):
        return Check("node client endpoint", OK, "%s: in the unit's runtime directory; a local "
                     "client's user needs group edge-agent" % endpoint)
    if sock.startswith(("/tmp/", "/var/tmp/")):
        why = "/tmp is private to the unit (PrivateTmp=yes): no program outside reaches it"
    else:
        why = "the unit can bind no socket there (ProtectSystem=strict), or other users cannot"
    return Check("node client endpoint", WARN, "%s: under edge-agent@%s.service %s"
                 % (endpoint, instance, why),
                 'client_bind = "ipc://%s/client.sock" (the unit\'s RuntimeDirectory), and the '
                 "camera program's user in group edge-agent (sudo usermod -aG edge-agent USER)"
                 % here)


def calibrate_command(cfg: Any) -> str:
    """The ``edge-agent calibrate`` command line that writes the profile the worker config
    ``cfg`` reads (``/var/lib/edge-agent/calibration.json`` if it names none), measured with
    its engine's backend, precision and threads, as the calibration unit runs it; as the
    service user (``agent.ops.paths.as_service_user``) where the profile is the service's."""
    from agent.ops.state import PROFILE_NAME
    from agent.fleet.render import calibrate_args

    path = cfg.capacity_profile or _unit_profile()
    where = ["--state-dir", os.path.dirname(path) or "."]
    if os.path.basename(path) != PROFILE_NAME:
        where += ["--profile", path]
    return as_service_user("edge-agent calibrate --bundle %s %s %s" % (
        shlex.quote(cfg.bundle), " ".join(shlex.quote(w) for w in where),
        calibrate_args(cfg)), path)


def _unit_profile() -> str:
    """The profile the calibration unit writes: ``$STATE_DIRECTORY/calibration.json``."""
    from agent.ops.state import PROFILE_NAME
    from agent.ops.state import DEFAULT_STATE_DIR

    return os.path.join(DEFAULT_STATE_DIR, PROFILE_NAME)


def _unit_note(path: str) -> str:
    """The calibration unit's way to the same file, when it writes ``path``."""
    if os.path.abspath(path) != _unit_profile():
        return ""
    return " (with the units installed: sudo systemctl start edge-agent-calibrate)"


def _missing(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _steps(cfg: Any, got: Dict[str, Any]
           ) -> List[Tuple[str, Callable[[], str], Callable[[Exception], str]]]:
    """(check name, step returning what it saw, its fix of a fault) in the order ``build``
    runs them; ``got`` receives what they read ("bundle", "policy")."""
    from agent.net.keyfiles import load_public_key
    from agent.net.security import security_from_config
    from agent.node import build
    from agent.node.limits import LimitError
    from agent.ops.files import FileFault
    from engines.bundle import load_bundle

    def files() -> str:
        # the profile: check_profile; a missing state_dir is left for run to make
        made_in = build.preflight(replace(cfg, capacity_profile=""), create=False)
        closed = service_files_closed(cfg)  # as root: the service user's run, judged by mode
        if closed:
            raise FileFault("state_dir: " + closed)
        return "state_dir %s %s; its files and the bundle's are regular files" % (
            cfg.state_dir, "writable" if not made_in else
            "not there yet: run makes it (%s takes a new folder)" % made_in)

    def bundle() -> str:
        got["bundle"] = b = load_bundle(cfg.bundle)
        try:  # the limits come last in check_config: their fault is the next step's
            got["limits"] = build.check_config(cfg, b)
        except LimitError as exc:
            got["limits"] = exc
        return "%s: %d stages, files match their sha256; the config fits it" % (
            b.name, len(b.stages))

    def limits() -> str:
        if isinstance(got["limits"], LimitError):
            raise got["limits"]
        return got["limits"]

    def keys() -> str:
        security_from_config(cfg)
        if cfg.security != "curve":
            return "security = %r: no keys" % cfg.security
        for p in cfg.peers:
            load_public_key(p.public_key)
        return "CURVE: own keys and %d peer key(s) read" % len(cfg.peers)

    def policy() -> str:
        b = got["bundle"]
        got["policy"] = build.configured_policy(cfg, b, build.build_view(
            cfg, b, build.open_exit_profile(b)))
        return "%s made and configured for %s" % (cfg.policy, cfg.node_id)

    steps = [("node files", files, lambda exc: _files_fix(exc, cfg.state_dir)),
             ("node bundle", bundle,
              lambda exc: _fix(exc, "copy the bundle again, or fix the config's stages")),
             ("node limits", limits, lambda exc: getattr(exc, "fix", "") or CONFIG_FIX),
             ("node keys", keys,
              lambda exc: _fix(exc, "as the line says (docs/deployment.md, Security)")),
             ("node policy", policy, lambda exc: _fix(exc, CONFIG_FIX))]
    if cfg.role == "worker":  # then run loads the stage engines
        steps.append(("node accelerator", lambda: accelerator_line(cfg), lambda exc: _fix(
            exc, "install the GPU build (docs/jetson.md), or set accelerator = \"preferred\" "
                 "to accept the CPU")))
    return steps


def service_files_closed(cfg: Any) -> Optional[str]:
    """Where doctor runs as another user (root) than the service user and the state_dir is
    that user's: the files ``run`` appends to there that the service user may not write
    (``preflight``'s line; left root's by a run with sudo), else None. As the service user,
    ``preflight`` itself has found them."""
    import pwd

    from agent.ops.paths import DEFAULT_USER
    from agent.node.preflight import appended_files
    from agent.ops.doctor_check import files_closed, runs_as

    try:
        mine = os.stat(cfg.state_dir).st_uid == pwd.getpwnam(DEFAULT_USER).pw_uid
    except (OSError, KeyError):  # no state_dir yet, or no service user here
        return None
    return files_closed(appended_files(cfg), DEFAULT_USER) if mine and not runs_as(
        DEFAULT_USER) else None


def accelerator_line(cfg: Any) -> str:
    """What the worker config ``cfg``'s ``accelerator`` makes of this machine's GPU backends,
    without loading anything: raises the agent's own start-up fault where ``run`` would find a
    stage on the CPU under accelerator = "required" (no TensorRT and no GPU provider in the
    onnxruntime build); whether a GPU provider then really starts is the ``onnxruntime`` line."""
    from engines.accelerator import on_cpu_but_required, resolve_accelerator
    from engines.engine import EngineUnavailable
    from engines.loader import NO_TENSORRT, TENSORRT_MISSING, tensorrt_available

    mode = resolve_accelerator(cfg.accelerator)
    if mode != "required":
        return "accelerator = %s%s: %s" % (
            mode, "" if cfg.accelerator else " (the default off a Jetson)",
            "the CPU on purpose" if mode == "none" else "a stage the GPU cannot take runs on "
            "the CPU, with a WARNING")
    if cfg.backend in ("auto", "tensorrt") and tensorrt_available():
        return "accelerator = required: TensorRT imports (each stage's plan is built or read " \
               "from the cache at start)"
    if cfg.backend == "tensorrt":
        raise EngineUnavailable(NO_TENSORRT)
    import onnxruntime as ort
    from engines.ort_backend import choose_providers, providers_missing

    use, missing = choose_providers(ort.get_available_providers())
    if use == ["CPUExecutionProvider"]:  # the causes as the engine loader records them
        causes = ([TENSORRT_MISSING] if cfg.backend == "auto" else []) + [
            providers_missing(ort, missing)]
        raise on_cpu_but_required(cfg.stages[0], "; ".join(causes))
    return "accelerator = required: onnxruntime offers %s" % ", ".join(use[:-1])


def _files_fix(exc: Exception, state_dir: str) -> str:
    """The fix of a ``preflight`` fault: the one its line states (after its last "; "), else,
    by the field it names, a writable state_dir, access to a file, or the field's own."""
    text = _line(exc)
    field = text.split(":", 1)[0]
    if "; " in text:
        return text.rsplit("; ", 1)[1]
    if "dangling link" in text:
        return "remove the link, or make the file it points to"
    if " is a link to nothing (" in text:  # state_dir on a card not mounted: its own fix
        return text.rsplit("): ", 1)[1]
    if field == "state_dir":
        return STATE_DIR_FIX % state_dir
    if "Permission denied" in text:
        return ACCESS_FIX
    return FIELD_FIX.get(field, "fix %s in the config or the file it names (docs/formats.md, "
                                "'Node config')" % field)


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _fix(exc: Exception, fix: str) -> str:
    """``fix``, or where access was refused ACCESS_FIX, unless the line states its own
    ``(run: ...)``."""
    text = str(exc)
    if text.startswith("emulate_capacity_flops:"):  # the line names the capacity that would do
        return "raise emulate_capacity_flops to what the line gives, or set it to 0 (no emulation)"
    return ACCESS_FIX if "Permission denied" in text and "(run: " not in text else fix
