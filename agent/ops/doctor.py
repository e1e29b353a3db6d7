"""The checks behind ``edge-agent doctor``: what a field engineer runs first on a device.

Each check returns a ``Check``: a name, OK / WARN / FAIL, what was seen, and for WARN and FAIL the
fix. FAIL means the agent cannot work as deployed (it would refuse to start with accelerator =
"required", or crash); WARN means it works but not as well as it could (the CPU on a box with a
GPU, a mode without calibration). The checks read files, import libraries and open one
onnxruntime session and the jtop client; they change nothing on the machine.
"""

from __future__ import annotations

import grp
import importlib
import os
import platform
import shlex
import pwd
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from agent.errors import first_line, missing_module_hint
from agent.ops.doctor_check import FAIL, OK, WARN, Check  # noqa: F401 - importers' names
from agent.ops.doctor_check import check_open_files, state_dir_closed
from agent.ops.doctor_bundle import unrunnable_stage
from agent.ops.state import default_state_dir
from calibration import host

DEVICE_GROUPS = ("video", "render", "jtop")  # GPU device nodes, DRI nodes, jetson-stats' socket
JTOP_MIN_VERSION = (4, 3)  # earlier releases mark every nvpmodel mode settable
# L4T major release -> (JetPack, the Python its Ubuntu ships, highest numpy that works there)
L4T_RELEASES = {"32": ("4.x", "3.6", None), "35": ("5.x", "3.8", (1, 24)),
                "36": ("6.x", "3.10", (2, 0))}


@dataclass
class Context:
    """What the checks look at; tests point ``root`` at a fake file system."""

    root: str = "/"
    bundle: str = ""  # bundle directory; "" = the demo bundle shipped with engines
    state_dir: str = ""  # "" = $STATE_DIRECTORY, else /var/lib/edge-agent
    cache_dir: str = ""  # "" = the TensorRT plan cache default ($CACHE_DIRECTORY first)
    user: str = "edge-agent"  # the service user
    jtop_module: Any = None  # None: import jetson-stats' jtop
    jetson: Optional[bool] = None  # None: detect from /etc/nv_tegra_release under root
    mode_name: Optional[str] = None  # filled by the jtop check: the active power mode
    jtop_fail: Optional["Check"] = None  # filled by the jtop check: its line when it FAILs
    configs: List[Any] = field(default_factory=list)  # doctor --config's, parsed (NodeConfig)

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def is_jetson(self) -> bool:
        if self.jetson is None:
            self.jetson = os.path.exists(self.path("/etc/nv_tegra_release"))
        return self.jetson


def _version_tuple(text: str) -> tuple:
    digits = ["".join(c for c in part if c.isdigit()) for part in str(text).split(".")[:3]]
    return tuple(int(d) if d else 0 for d in digits)


def _import(name: str):
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install raising anything
        return None, "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")


def _l4t(ctx: Context) -> Optional[str]:
    return host.read_host_identity(ctx.root).l4t if ctx.is_jetson() else None


def check_board(ctx: Context) -> Check:
    ident = host.read_host_identity(ctx.root)
    if not ctx.is_jetson():
        return Check("board", OK, "%s, not a Jetson (no /etc/nv_tegra_release): the CPU path"
                     % ident.board)
    major = str(ident.l4t).split(".")[0]
    jetpack = L4T_RELEASES.get(major, ("unknown",))[0]
    if major not in L4T_RELEASES or major == "32":
        return Check("board", WARN, "%s, L4T %s (JetPack %s)" % (ident.board, ident.l4t, jetpack),
                     "edge-agent is tested against JetPack 5 (L4T 35) and 6 (L4T 36)")
    return Check("board", OK, "%s, L4T %s (JetPack %s)" % (ident.board, ident.l4t, jetpack))


def check_python(ctx: Context) -> Check:
    here = "%d.%d" % sys.version_info[:2]
    detail = "Python %s (%s)" % (platform.python_version(), sys.executable)
    l4t = _l4t(ctx)
    want = L4T_RELEASES.get(str(l4t).split(".")[0], (None, None))[1] if l4t else None
    if want and want != here:
        return Check("python", WARN, detail + "; JetPack's TensorRT bindings are built for Python %s"
                     % want, "create the venv with /usr/bin/python3 (python3 -m agent install does)")
    return Check("python", OK, detail)


def check_numpy(ctx: Context) -> Check:
    np, err = _import("numpy")
    if np is None:
        return Check("numpy", FAIL, "does not import (%s)" % err, "pip install 'numpy<2'")
    l4t = _l4t(ctx)
    below = L4T_RELEASES.get(str(l4t).split(".")[0], (None, None, None))[2] if l4t else None
    if below and _version_tuple(np.__version__)[:2] >= below:
        bound = "%d.%d" % below
        return Check("numpy", FAIL, "numpy %s; on this JetPack NVIDIA's TensorRT and onnxruntime "
                     "wheels need numpy < %s" % (np.__version__, bound),
                     "pip install 'numpy<%s' (pip install 'edge-agent[jetson]' pins it)" % bound)
    return Check("numpy", OK, "numpy %s" % np.__version__)


def _nvidia_gpu_present(ctx: Context) -> bool:
    return ctx.is_jetson() or os.path.exists(ctx.path("/dev/nvidia0"))


def _onnxruntime_dists() -> List[str]:
    from importlib import metadata
    named = (((d.metadata.get("Name") or "").lower(), d.version) for d in metadata.distributions())
    return sorted({"%s %s" % nv for nv in named if nv[0].startswith("onnxruntime")})


def check_onnxruntime(ctx: Context, session_factory: Optional[Callable] = None) -> Check:
    ort, err = _import("onnxruntime")
    if ort is None:
        fix = ("install NVIDIA's onnxruntime-gpu wheel for this JetPack (docs/jetson.md)"
               if ctx.is_jetson() else "pip install 'edge-agent[cpu]' (or [gpu] with CUDA)")
        return Check("onnxruntime", FAIL, "does not import (%s)" % err, fix)
    dists = _onnxruntime_dists()
    where = os.path.dirname(getattr(ort, "__file__", "") or "?")
    available = list(ort.get_available_providers())
    used = _session_providers(ctx, ort, available, session_factory)
    detail = "onnxruntime %s (%s) from %s; available %s; a stage session uses %s" % (
        ort.__version__, ort.get_device(), where, ",".join(available), ",".join(used))
    if len(dists) > 1:
        return Check("onnxruntime", FAIL, detail + "; several builds installed: " + ", ".join(dists),
                     "they overwrite one module: pip uninstall %s, then install the one you want"
                     % " ".join(d.split()[0] for d in dists))
    gpu_used = any(p != "CPUExecutionProvider" for p in used)
    if ctx.is_jetson() and not gpu_used:
        return Check("onnxruntime", FAIL, detail + "; the CPU build on a Jetson (the index's "
                     "onnxruntime shadows NVIDIA's)",
                     "pip uninstall onnxruntime in the agent's venv, then install NVIDIA's "
                     "onnxruntime-gpu wheel for this JetPack (docs/jetson.md)")
    if _nvidia_gpu_present(ctx) and not gpu_used:
        return Check("onnxruntime", WARN, detail + "; an NVIDIA GPU is present",
                     "pip uninstall onnxruntime && pip install 'edge-agent[gpu]'")
    return Check("onnxruntime", OK, detail)


def _session_providers(ctx: Context, ort: Any, available: List[str],
                       session_factory: Optional[Callable]) -> List[str]:
    """Providers a real session on the bundle's first stage uses (GPU providers first)."""
    try:
        from engines.bundle import load_bundle
        from engines.demo import DEMO_BUNDLE_DIR
        from engines.ort_backend import PREFERRED_PROVIDERS, choose_providers

        stage = load_bundle(ctx.bundle or DEMO_BUNDLE_DIR).stages[0]
        use, _ = choose_providers(available, PREFERRED_PROVIDERS)
        make = session_factory or ort.InferenceSession
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return list(make(stage.onnx_path, sess_options=so, providers=use).get_providers())
    except Exception as exc:
        return ["(no session: %s)" % first_line(exc)]


def check_tensorrt(ctx: Context) -> Check:
    trt, err = _import("tensorrt")
    if trt is None:
        if ctx.is_jetson():
            return Check("tensorrt", WARN, "the tensorrt Python package does not import (%s)" % err,
                         "install python3-libnvinfer (JetPack) and create the venv with "
                         "--system-site-packages (python3 -m agent install --jetson yes does)")
        return Check("tensorrt", OK, "not installed (onnxruntime only)")
    return Check("tensorrt", OK, "TensorRT %s" % trt.__version__)


def check_cuda_binding(ctx: Context) -> Check:
    trt, _ = _import("tensorrt")
    rt, err = _import("cuda.bindings.runtime")
    if rt is None:
        rt, err2 = _import("cuda.cudart")
        err = err if rt is None else None
    if rt is None:
        if trt is not None:
            return Check("cuda-python", FAIL, "the TensorRT backend needs cuda-python (%s)" % err,
                         "pip install 'edge-agent[jetson]' (cuda-python 11.x on JetPack 5, 12.x "
                         "on JetPack 6)")
        return Check("cuda-python", OK, "not installed (not needed without TensorRT)")
    try:
        from importlib import metadata
        version = metadata.version("cuda-python")
    except Exception:
        version = "?"
    try:
        err_code, count = rt.cudaGetDeviceCount()
        seen = "%d CUDA device(s)" % count if int(err_code) == 0 else "CUDA error %s" % (err_code,)
    except Exception as exc:
        seen = "cudaGetDeviceCount failed: %s" % exc
    status = OK if seen.endswith("device(s)") and not seen.startswith("0 ") else WARN
    return Check("cuda-python", status, "cuda-python %s, %s" % (version, seen),
                 "" if status == OK else "is the service user in group video? (see groups)")


def check_jtop(ctx: Context) -> Check:
    """jetson-stats and its service; a FAIL is kept in ``ctx.jtop_fail`` for the calibration
    lines (their calibrate fix needs jtop first)."""
    got = _jtop_line(ctx)
    ctx.jtop_fail = got if got.status == FAIL else None
    return got


def _jtop_line(ctx: Context) -> Check:
    jtop_mod = ctx.jtop_module
    if jtop_mod is None:
        jtop_mod, err = _import("jtop")
        if jtop_mod is None:
            if ctx.is_jetson():
                return Check("jtop", FAIL, "jetson-stats is not installed in this environment",
                             "pip install 'edge-agent[jetson]' and sudo pip3 install jetson-stats "
                             "(the service) of the same version")
            return Check("jtop", OK, "not a Jetson: no jtop service expected")
    version = str(getattr(jtop_mod, "__version__", "?"))
    if version != "?" and _version_tuple(version)[:2] < JTOP_MIN_VERSION:
        return Check("jtop", FAIL, "jetson-stats %s < 4.3 (reports every power mode settable)"
                     % version, "pip install -U 'jetson-stats>=4.3' (venv and system)")
    error = getattr(jtop_mod, "JtopException", Exception)
    from agent.ops.doctor_calib import jtop_fix, jtop_user

    try:
        with jtop_mod.jtop(interval=0.5) as j:
            nvp = j.nvpmodel
            if nvp is None:
                return Check("jtop", WARN, "jetson-stats %s, service reachable; no nvpmodel on "
                             "this board" % version, "calibration measures one mode")
            ctx.mode_name = str(nvp.name)
            return Check("jtop", OK, "jetson-stats %s, service reachable; power mode %s (id %d)"
                         % (version, nvp.name, int(nvp.id)))
    except (error, OSError) as exc:
        text = " ".join(str(exc).split())
        return Check("jtop", FAIL if ctx.is_jetson() else WARN, "jetson-stats %s: %s" % (
            version, text[:200]), jtop_fix(text, jtop_user(ctx.user)))


def check_groups(ctx: Context) -> Check:
    try:
        pw = pwd.getpwnam(ctx.user)
    except KeyError:
        return Check("service user", WARN, "no user %s here" % ctx.user,
                     "in a clone of edge-agent: sudo python3 -m agent install (creates it with the device groups)")
    member = {g.gr_name for g in grp.getgrall() if ctx.user in g.gr_mem}
    try:
        member.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    existing = {g.gr_name for g in grp.getgrall()}
    missing = [g for g in DEVICE_GROUPS if g in existing and g not in member]
    if missing:
        return Check("service user", WARN if not ctx.is_jetson() else FAIL,
                     "%s is not in group(s) %s" % (ctx.user, ", ".join(missing)),
                     "sudo usermod -aG %s %s" % (",".join(missing), ctx.user))
    return Check("service user", OK, "%s in %s" % (ctx.user, ", ".join(
        g for g in DEVICE_GROUPS if g in member) or "no device group (none exists here)"))


def _writable(directory: str) -> Optional[str]:
    """None when a file can be created in ``directory``, else why not."""
    from agent.ops.files import link_to_nothing

    if not os.path.isdir(directory):
        dangling = link_to_nothing(directory)
        if dangling is None:
            return "does not exist"
        return "%s link to nothing (%s): mount or create %s" % (
            "a" if dangling[0] == os.path.abspath(directory) else dangling[0] + " is a",
            dangling[1], dangling[1])
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def state_dir_of(ctx: Context) -> str:
    return ctx.state_dir or default_state_dir(os.environ)


def check_dirs(ctx: Context) -> List[Check]:
    from agent.ops.files import free_bytes
    from agent.ops.reserve import RESERVE_BYTES
    from engines.trt_backend import default_cache_dir

    out = []
    for name, d in (("state dir", state_dir_of(ctx)),
                    ("cache dir", ctx.cache_dir or os.path.dirname(default_cache_dir()))):
        why = _writable(d)
        closed = state_dir_closed(ctx.user, d, why) if name == "state dir" else None
        if closed is not None:  # the service user cannot write it: run exits 78
            out.append(closed)
            continue
        free = free_bytes(d, ctx.user == "root") if why is None else None  # not root's blocks
        if free is not None and free < RESERVE_BYTES:
            why = "%d bytes free: records, state and logs cannot be written" % free
        fix = (why.rsplit("): ", 1)[1] if why and "link to nothing (" in why else "%s, or pass "
               "--state-dir/--cache-dir" % ("free space there" if free is not None else "remount"
               " it read-write" if "Read-only" in (why or "") else "run as the service user "
               "(systemd creates it: StateDirectory=/CacheDirectory=)"))
        out.append(Check(name, OK, "%s writable" % d) if why is None else
                   Check(name, WARN, "%s: %s" % (d, why), fix))
    return out


def check_bundle(ctx: Context) -> Check:
    from agent.errors import UsageError
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR

    path = ctx.bundle or DEMO_BUNDLE_DIR
    try:
        b = load_bundle(path)  # checks every stage file's sha256 against the manifest
    except (UsageError, OSError) as exc:
        return Check("bundle", FAIL, " ".join(str(exc).split()), "copy the bundle again")
    try:
        broken, fix = unrunnable_stage(b)
    except ModuleNotFoundError as exc:  # the runtime is missing: no fault of the bundle's
        return Check("bundle", WARN, "%s: files match their sha256; not run: no %s" % (
            b.name, exc.name), missing_module_hint(exc) or "")
    if broken:
        return Check("bundle", FAIL, broken, fix)
    return Check("bundle", OK, "%s: %d stages, every file matches its sha256 and runs on the "
                 "CPU%s" % (b.name, len(b.stages),
                            "" if ctx.bundle else " (the demo bundle; --bundle DIR)"))


def check_calibration(ctx: Context) -> List[Check]:
    """The profile ``calibrate --state-dir STATE_DIR`` writes; with node configs, none (each
    worker's capacity_profile is a "node calibration" line of its own). On a Jetson whose jtop
    line FAILs the mode is unknown and calibrate refuses: the fix is jtop's first."""
    from agent.ops.doctor_calib import calibration_fix, profile_line
    from agent.ops.paths import as_service_user
    path = os.path.join(state_dir_of(ctx), "calibration.json")
    fix = as_service_user(calibrate_cmd(ctx), path)
    if ctx.configs or not os.path.exists(path):
        return [] if ctx.configs else [
            Check("calibration", WARN, "no profile at %s: a worker whose capacity_profile names "
                  "it exits 78, one that names none times its engine at start" % path,
                  calibration_fix(fix + " (or sudo systemctl start edge-agent-calibrate)",
                                  ctx.jtop_fail))]
    fix = calibration_fix(fix + " --modes current", ctx.jtop_fail)
    if ctx.jtop_fail is not None and ctx.mode_name is None:
        return [Check("calibration", WARN, "%s: not used: the power mode is unknown (jtop FAILs "
                      "above), so a worker without power_mode times its engine at start" % path,
                      fix)]
    hashes = ()
    if ctx.bundle:  # the demo bundle by default: a device's profile is of its own bundle
        from engines.bundle import load_bundle
        # the manifest's hashes: the "bundle" check has compared the files with them already
        hashes = tuple((s.index, s.sha256)
                       for s in load_bundle(ctx.bundle, verify_files=False).stages)
    mode = ctx.mode_name or host.read_cpu_mode_name(ctx.root)
    return [profile_line("calibration", path, mode, ctx.root, fix, hashes, ctx.user)]


def calibrate_cmd(ctx: Context) -> str:
    """The ``calibrate`` command of the fixes: the bundle doctor was given (--bundle), else DIR
    (without one doctor checks the demo bundle), and the state directory."""
    return "edge-agent calibrate --bundle %s --state-dir %s" % (
        shlex.quote(ctx.bundle) if ctx.bundle else "DIR", state_dir_of(ctx))


def check_mode_left(ctx: Context) -> List[Check]:
    """A power mode an interrupted calibration left switched (``doctor_calib.mode_left_line``)."""
    from agent.ops.doctor_calib import mode_left_line
    from agent.ops.paths import as_service_user
    state = state_dir_of(ctx)  # the command writes its profile there: as the service user
    return mode_left_line(state, as_service_user(calibrate_cmd(ctx),
                                                 os.path.join(state, "calibration.json")))


def run_checks(ctx: Context) -> List[Check]:
    """Every check, in the order printed; a check that crashes is itself a FAIL line."""
    out: List[Check] = []
    for fn in (check_board, check_python, check_numpy, check_onnxruntime, check_tensorrt,
               check_cuda_binding, check_jtop, check_groups, check_dirs, check_bundle,
               check_calibration, check_mode_left, check_open_files):
        try:
            got = fn(ctx)
        except Exception as exc:  # a doctor must report, never crash
            got = Check(fn.__name__[len("check_"):], FAIL, "check crashed: %s: %s"
                        % (type(exc).__name__, exc), "report this as a bug")
        out.extend(got if isinstance(got, list) else [got])
    return out
