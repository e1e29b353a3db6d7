"""An emulated Jetson Orin for jetson-stats' real service, and the calibration runs against it.

Run as root inside a private mount namespace (``unshare --mount --propagation private``), never
directly: it mounts tmpfs over ``/fake_sys``, ``/sys/devices/virtual`` and ``/run``, and a copy
of ``/etc/group`` with a ``jtop`` group, so nothing outside the namespace changes. Following
jetson-stats' own tests, ``JTOP_TESTING=1`` makes the service read CPU and GPU sysfs from
``/fake_sys``; ``nvpmodel`` is a stand-in on ``PATH`` that reads an ``/etc/nvpmodel.conf``-format
file, answers ``-p --verbose``, ``-q`` and ``-m ID`` as the real tool does, keeps the mode in a
state file, sets the GPU clock cap of the mode in the fake sysfs, and logs every call (with what
came on stdin: ``YES`` would be a forced switch, which reboots a real board).

``python emulated_orin.py OUT_DIR BUNDLE`` runs ``edge-agent calibrate`` three times (to the end,
into an error, and into SIGTERM) and writes ``OUT_DIR/result.json`` for the test to check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPU = "17000000.gpu"
# id, name, GPU max clock (Hz), TPC power-gating mask; a mode with another mask than the
# current one can only be reached with a reboot (jetson-stats marks it not settable)
MODES = ((0, "MAXN", 1300500000, "0"), (1, "15W", 612000000, "0"), (2, "30W", 918000000, "0"),
         (3, "7W", 306000000, "1"))
START_MODE = 1  # the board's mode before calibration: must be the mode after every run
WAIT_S = 120.0
L4T_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"

NVPMODEL = r'''#!{python}
"""Stand-in for NVIDIA's nvpmodel: -p --verbose, -q, -m ID (state in $NVPMODEL_STATE)."""
import json, os, re, sys, time
conf, state, log = os.environ["NVPMODEL_CONF"], os.environ["NVPMODEL_STATE"], os.environ["NVPMODEL_LOG"]
modes, default, cur = [], None, None
for line in open(conf):
    m = re.match(r"< POWER_MODEL ID=(\d+) NAME=(\w+) >", line.strip())
    if m:
        cur = {{"id": int(m.group(1)), "name": m.group(2), "gpu_max": None, "mask": "0"}}
        modes.append(cur)
    m = re.match(r"< PM_CONFIG DEFAULT=(\d+) >", line.strip())
    if m:
        default = int(m.group(1))
    m = re.match(r"GPU MAX_FREQ (\d+)", line.strip())
    if m and cur is not None:
        cur["gpu_max"] = int(m.group(1))
    m = re.match(r"GPU MIN_FREQ (\d+)", line.strip())
    if m and cur is not None:
        cur["gpu_min"] = int(m.group(1))
    m = re.match(r"TPC_POWER_GATING TPC_PG_MASK (\w+)", line.strip())
    if m and cur is not None:
        cur["mask"] = m.group(1)
stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
with open(log, "a") as f:
    f.write(" ".join(sys.argv[1:]) + " | stdin=" + repr(stdin.strip()) + "\n")
now = int(open(state).read())
by_id = {{m["id"]: m for m in modes}}
args = sys.argv[1:]
if args[:1] == ["-p"]:
    print("NVPM VERB: Config file: " + conf)
    d = by_id[default]
    print("NVPM VERB: PM_CONFIG: DEFAULT=%s(%d)" % (d["name"], d["id"]))
    for m in modes:
        print("NVPM VERB: POWER_MODEL: ID=%d NAME=%s" % (m["id"], m["name"]))
        print("NVPM VERB: TPC_POWER_GATING TPC_PG_MASK %s" % m["mask"])
elif args[:1] == ["-q"]:
    print("NV Power Mode: %s" % by_id[now]["name"])
    print(now)
elif args[:1] == ["-m"] and len(args) == 2 and args[1].isdigit() and int(args[1]) in by_id:
    new = by_id[int(args[1])]
    # faults a test asks for in nvpmodel.faults beside the state file: {{"fail": [ids],
    # "hang": [ids]}} -- a failing switch prints an NVPM ERROR line and exits 1, a hanging one
    # never returns (until it is killed: jetson-stats terminates it after its command timeout)
    try:
        faults = json.load(open(os.path.join(os.path.dirname(state), "nvpmodel.faults")))
    except (OSError, ValueError):
        faults = {{}}
    if new["id"] in faults.get("fail", []):
        print("NVPM ERROR: failed to set power mode %d: Device or resource busy" % new["id"])
        sys.exit(1)
    if new["id"] in faults.get("hang", []):
        time.sleep(3600)
        sys.exit(1)
    if new["mask"] != by_id[now]["mask"] and stdin.strip() != "YES":
        print("NVPM WARN: Golden image context is already created")
        print("NVPM ERROR: Reboot required for changing to this power mode: %d" % new["id"])
        sys.exit(0)
    # written whole (temp file + rename): the test polls the state file while this runs; the
    # mode's GPU minimum as well, as the real tool sets both (a clock jetson_clocks locked at
    # its maximum is unlocked by a mode change)
    writes = [(os.environ["NVPMODEL_GPU_MAX"], str(new["gpu_max"]))]
    if os.environ.get("NVPMODEL_GPU_MIN") and new.get("gpu_min"):
        writes.append((os.environ["NVPMODEL_GPU_MIN"], str(new["gpu_min"])))
    for path, text in writes + [(state, str(new["id"]))]:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
else:
    print("NVPM ERROR: bad arguments %s" % " ".join(args))
    sys.exit(1)
'''

JETSON_CLOCKS = r'''#!{python}
"""Stand-in for NVIDIA's jetson_clocks, for the GPU clock only: no option locks the GPU's
minimum clock at its maximum (the cap of the active nvpmodel mode); --show prints the settings;
--store [FILE] saves what it changes and --restore [FILE] writes that back (FILE defaults to
~/l4t_dfs.conf). Every call is logged."""
import os, sys
freq, log = {freq!r}, {log!r}
def read(name):
    with open(os.path.join(freq, name)) as f:
        return f.read().strip()
def write(path, value):
    with open(path + ".tmp", "w") as f:
        f.write(value + "\n")
    os.replace(path + ".tmp", path)
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(" ".join(args) + "\n")
path = args[1] if len(args) > 1 else os.path.join(os.path.expanduser("~"), "l4t_dfs.conf")
if not args:
    write(os.path.join(freq, "min_freq"), read("max_freq"))
elif args[0] == "--show":
    print("SOC family:tegra234  Machine:Emulated Jetson AGX Orin")
    print("GPU MinFreq=%s MaxFreq=%s CurrentFreq=%s" % (read("min_freq"), read("max_freq"),
                                                       read("cur_freq")))
elif args[0] == "--store":
    with open(path, "w") as f:
        f.write("%s:%s\n" % (os.path.join(freq, "min_freq"), read("min_freq")))
elif args[0] == "--restore":
    if not os.path.exists(path):
        print("Error: %s file not found" % path)
        sys.exit(1)
    with open(path) as f:
        for line in f.read().splitlines():
            target, value = line.rsplit(":", 1)
            write(target, value)
else:
    print("usage: jetson_clocks [--show | --store [file] | --restore [file]]")
    sys.exit(1)
'''


def add_jetson_clocks(work: str, freq: str) -> None:
    """Put the ``jetson_clocks`` stand-in (``JETSON_CLOCKS``, calls logged in
    ``WORK/jetson_clocks.log``) where jetson-stats looks for it: ``/usr/bin/jetson_clocks``
    only, not on PATH. ``/usr/bin`` is overlaid for that inside the namespace."""
    for d in ("usr-bin-upper", "usr-bin-work"):
        os.makedirs(os.path.join(work, d))
    _run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=/usr/bin,upperdir=%s,workdir=%s"
          % (os.path.join(work, "usr-bin-upper"), os.path.join(work, "usr-bin-work")),
          "/usr/bin"])
    _write("/usr/bin/jetson_clocks", JETSON_CLOCKS.format(
        python=sys.executable, freq=freq, log=os.path.join(work, "jetson_clocks.log")))
    os.chmod("/usr/bin/jetson_clocks", 0o755)


def gpu_clocks(env: dict) -> tuple:
    """(minimum, maximum) GPU clock in Hz in the fake sysfs: equal while jetson_clocks is on."""
    values = []
    for key in ("NVPMODEL_GPU_MIN", "NVPMODEL_GPU_MAX"):
        with open(env[key]) as f:
            values.append(int(f.read()))
    return tuple(values)


def set_jetson_clocks(on: bool) -> None:
    """Turn jetson_clocks on or off through the jtop service (as a user would in jtop) and
    return once the service reports it so; RuntimeError after ``WAIT_S``."""
    from jtop import jtop

    with jtop(interval=0.5) as j:
        j.jetson_clocks = on
        deadline = time.monotonic() + WAIT_S
        while j.ok() and bool(j.jetson_clocks) != on:
            if time.monotonic() > deadline:
                raise RuntimeError("jetson_clocks not %s after %.0f s" % (on, WAIT_S))


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _run(argv) -> None:
    subprocess.run(argv, check=True)


def build_board(work: str, jetson_clocks: bool = False) -> dict:
    """Mount the emulated board's files; returns the environment the service and nvpmodel need.
    ``jetson_clocks``: also a ``jetson_clocks`` stand-in (``add_jetson_clocks``)."""
    _run(["mount", "--make-rprivate", "/"])
    _run(["mount", "-t", "tmpfs", "tmpfs", "/fake_sys"])
    with open("/proc/stat") as f:
        _write("/fake_sys/stat", f.read())
    for n in range(os.cpu_count() or 1):
        base = "/fake_sys/devices/system/cpu/cpu%d/cpufreq/" % n
        for key, khz in (("scaling_min_freq", 115200), ("scaling_max_freq", 2201600),
                         ("scaling_cur_freq", 1190400), ("cpuinfo_min_freq", 115200),
                         ("cpuinfo_max_freq", 2201600), ("cpuinfo_cur_freq", 1190400)):
            _write(base + key, "%d\n" % khz)
        _write(base + "scaling_governor", "schedutil\n")
    dev = "/fake_sys/devices/platform/%s" % GPU
    freq = dev + "/devfreq/" + GPU
    start_max = [m[2] for m in MODES if m[0] == START_MODE][0]
    for key, value in (("cur_freq", 306000000), ("max_freq", start_max),
                       ("min_freq", 306000000), ("governor", "nvhost_podgov"),
                       ("available_frequencies", " ".join(str(m[2]) for m in MODES))):
        _write(os.path.join(freq, key), "%s\n" % value)
    for key, value in (("railgate_enable", 1), ("tpc_pg_mask", 0), ("enable_3d_scaling", 1),
                       ("load", 0)):
        _write(os.path.join(dev, key), "%s\n" % value)
    _write(os.path.join(dev, "of_node", "name"), "gpu\n")
    os.symlink(dev, os.path.join(freq, "device"))
    os.makedirs("/fake_sys/class/devfreq")
    os.symlink(freq, "/fake_sys/class/devfreq/" + GPU)
    # no DMI on a VM: the service reads it at start-up
    _run(["mount", "-t", "tmpfs", "tmpfs", "/sys/devices/virtual"])
    _write("/sys/devices/virtual/dmi/id/product_name", "Emulated Jetson AGX Orin\n")
    # the service's socket goes to /run/jtop.sock and it needs group jtop
    _run(["mount", "-t", "tmpfs", "tmpfs", "/run"])
    with open("/etc/group") as f:
        groups = f.read()
    groups += "" if "\njtop:" in groups else "jtop:x:990:\n"
    # /etc as an overlay: the L4T release file (doctor and calibrate see a Jetson) and the group
    for d in ("etc-upper", "etc-work"):
        os.makedirs(os.path.join(work, d))
    overlay = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                              "lowerdir=/etc,upperdir=%s,workdir=%s" % (
                                  os.path.join(work, "etc-upper"), os.path.join(work, "etc-work")),
                              "/etc"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if overlay.returncode == 0:
        _write("/etc/group", groups)
        _write("/etc/nv_tegra_release", L4T_RELEASE)
    else:  # no overlayfs here: the group file alone, bind-mounted
        _write(os.path.join(work, "group"), groups)
        _run(["mount", "--bind", os.path.join(work, "group"), "/etc/group"])
    # nvpmodel stand-in and its /etc/nvpmodel.conf-format file
    conf = ["< PM_CONFIG DEFAULT=0 >"]
    for mode_id, name, gpu_max, mask in MODES:
        conf += ["< POWER_MODEL ID=%d NAME=%s >" % (mode_id, name), "CPU_ONLINE CORE_0 1",
                 "TPC_POWER_GATING TPC_PG_MASK %s" % mask, "GPU MIN_FREQ 306000000",
                 "GPU MAX_FREQ %d" % gpu_max]
    _write(os.path.join(work, "nvpmodel.conf"), "\n".join(conf) + "\n")
    _write(os.path.join(work, "nvpmodel.state"), str(START_MODE))
    _write(os.path.join(work, "nvpmodel.log"), "")
    tool = os.path.join(work, "bin", "nvpmodel")
    _write(tool, NVPMODEL.format(python=sys.executable))
    os.chmod(tool, 0o755)
    if jetson_clocks:
        add_jetson_clocks(work, freq)
    return dict(os.environ, JTOP_TESTING="1", PATH=os.path.join(work, "bin") + ":" + os.environ["PATH"],
                NVPMODEL_CONF=os.path.join(work, "nvpmodel.conf"),
                NVPMODEL_STATE=os.path.join(work, "nvpmodel.state"),
                NVPMODEL_LOG=os.path.join(work, "nvpmodel.log"),
                NVPMODEL_GPU_MAX=os.path.join(freq, "max_freq"),
                NVPMODEL_GPU_MIN=os.path.join(freq, "min_freq"))


def start_service(work: str, env: dict, command_timeout_s: float = 0.0) -> subprocess.Popen:
    """jetson-stats' real service; its config folder (under sys.base_prefix) goes to ``work``.
    ``command_timeout_s`` (0: jetson-stats' own 4 s) is how long it lets one ``nvpmodel`` call
    run before it kills it (it tries 5 times): a test of a hanging nvpmodel waits 5 such
    times, so it shortens them (the stand-in answers in well under a second)."""
    code = ("import sys; sys.base_prefix = sys.prefix = %r\n"
            "import logging; logging.basicConfig(level=logging.INFO)\n" % work)
    if command_timeout_s:
        code += ("import jtop.core.nvpmodel as nvp; nvp.COMMAND_TIMEOUT = %r\n"
                 % float(command_timeout_s))
    code += "from jtop.service import JtopServer\nJtopServer().loop_for_ever()\n"
    log = open(os.path.join(work, "service.log"), "w")
    # its own process group: JtopServer serves from a child process, which a signal to the
    # parent alone would leave running after the test
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WAIT_S
    # the socket file appears at its bind, a moment before its listen: wait for a connection
    while not _accepts("/run/jtop.sock"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("jtop service did not start: " + open(log.name).read()[-3000:])
        time.sleep(0.1)
    return proc


def _accepts(path: str) -> bool:
    """Whether a unix stream socket at ``path`` takes a connection (closed at once)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def stop_service(proc: subprocess.Popen) -> None:
    """SIGTERM to the service's whole process group, SIGKILL to what is left after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone of the group still there?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def restart_service(work: str, env: dict) -> subprocess.Popen:
    """Start the service again after ``stop_service``, as jetson-stats' unit does
    (``ExecStart=jtop --force``: a socket file left in /run by the process stopped is
    removed first, where a plain start would refuse with "Service already active"); returns
    once a client connects to it. Its log is appended to ``service.log``."""
    from jtop import JtopException, jtop

    code = ("import sys; sys.base_prefix = sys.prefix = %r\n"
            "import logging; logging.basicConfig(level=logging.INFO)\n"
            "from jtop.service import JtopServer\nJtopServer(force=True).loop_for_ever()\n"
            % work)
    log = open(os.path.join(work, "service.log"), "a")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WAIT_S
    while True:  # the socket file may be the stopped service's: wait for an answer
        try:
            with jtop(interval=0.5) as j:
                if j.ok():
                    return proc
        except (JtopException, OSError, EOFError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("jtop service did not start again: "
                               + open(log.name).read()[-3000:])
        time.sleep(0.2)


def _mode(env: dict) -> int:
    with open(env["NVPMODEL_STATE"]) as f:
        return int(f.read())


def _calls(env: dict) -> list:
    """Every nvpmodel call logged so far (its arguments), the jtop service's queries included."""
    with open(env["NVPMODEL_LOG"]) as f:
        return f.read().splitlines()


def set_faults(env: dict, fail=(), hang=()) -> None:
    """Make the nvpmodel stand-in's ``-m ID`` fail (an NVPM ERROR line, exit 1) for the ids in
    ``fail`` and never return for those in ``hang``; no ids: every switch works again."""
    _write(os.path.join(os.path.dirname(env["NVPMODEL_STATE"]), "nvpmodel.faults"),
           json.dumps({"fail": list(fail), "hang": list(hang)}))


def calibrate(env: dict, state: str, bundle: str, extra=(), sigterm_after_switch=False,
              block_after_switch="", after_switch=None, sigkill_after_switch=False) -> dict:
    """One `edge-agent calibrate --modes all` run; returns its exit status, output, the mode
    the board is in afterwards and how many nvpmodel calls the run made. Once the board has
    left its mode, ``sigterm_after_switch`` sends SIGTERM, ``block_after_switch`` (a folder)
    puts a file where that folder was (a write that fails mid-run) and ``after_switch`` (a
    function) is called (say, to stop the jtop service mid-measurement); ``sigkill_after_switch``
    kills the run outright (a power cut's effect on it). ``nvpmodel_calls``: the
    calls logged meanwhile, the jtop service's own queries (``-q``) among them."""
    calls_before = _calls(env)
    cmd = [sys.executable, "-m", "agent", "calibrate", "--bundle", bundle, "--modes", "all",
           "--stages", "1", "--seconds", "0.3", "--warmup", "0.05", "--switch-timeout", "30",
           "--state-dir", state] + list(extra)
    run_env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p),
                   OMP_NUM_THREADS="1")
    run_env.pop("JTOP_TESTING")
    proc = subprocess.Popen(cmd, cwd=REPO, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    switched = False
    if sigterm_after_switch or sigkill_after_switch or block_after_switch or after_switch:
        deadline = time.monotonic() + WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if _mode(env) != START_MODE:
                switched = True
                if after_switch is not None:
                    after_switch()
                elif sigkill_after_switch:
                    proc.kill()
                elif block_after_switch:
                    shutil.rmtree(block_after_switch)
                    _write(block_after_switch, "a file where the profile's folder was\n")
                else:
                    time.sleep(0.2)
                    proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.02)
    out, err = proc.communicate(timeout=WAIT_S * 3)
    return {"rc": proc.returncode, "stdout": out, "stderr": err[-4000:], "mode_after": _mode(env),
            "switched": switched, "nvpmodel_calls": _calls(env)[len(calls_before):]}


def run_in_namespace(script: str, args, timeout_s: float = 900.0) -> subprocess.CompletedProcess:
    """Run ``script`` with ``args`` in a private mount namespace, as the tests that use an
    emulated board do (output and errors together), with ``/fake_sys`` there for it to mount
    its tmpfs on (``_fake_sys_point``); skip where that cannot be: not root, no unshare, no
    jetson-stats, or namespaces not allowed."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root: the emulated board lives in a private mount namespace")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    pytest.importorskip("jtop", reason="jetson-stats is not installed (pip install -e '.[dev]')")
    with _fake_sys_point():
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                               script] + [str(a) for a in args], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=timeout_s)
    if "unshare failed" in proc.stdout or "Operation not permitted" in proc.stdout:
        pytest.skip("mount namespaces are not allowed here: " + proc.stdout[-300:])
    return proc


@contextlib.contextmanager
def _fake_sys_point():
    """``/fake_sys`` (an empty folder: each board's namespace mounts its own tmpfs on it) for
    the block, made where missing and removed by the last of the runs using it at once: test
    files run side by side (pytest-xdist), and removing it while another board's namespace
    has it mounted would take that board's sysfs away mid-run. The count of runs using it is
    kept under a lock in a file beside the lock (a run killed outright leaves a count that
    never drops: the folder then stays, empty)."""
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "edge-agent-test-fake_sys.count")

    def change(by: int) -> None:
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            words = f.read().split()
            users, made = (int(words[0]), words[1] == "made") if len(words) == 2 else (0, False)
            if by > 0 and not os.path.exists("/fake_sys"):
                os.mkdir("/fake_sys")
                made = True
            users = max(users + by, 0)
            if users == 0 and made and os.path.isdir("/fake_sys"):
                os.rmdir("/fake_sys")
                made = False
            f.seek(0)
            f.truncate()
            f.write("%d %s\n" % (users, "made" if made else "found"))

    change(+1)
    try:
        yield "/fake_sys"
    finally:
        change(-1)


def run_board_script(script: str, out_dir: str, *args) -> dict:
    """Run ``script OUT_DIR ARGS...`` in a private mount namespace (``run_in_namespace``); the
    ``result.json`` it wrote in ``out_dir``."""
    proc = run_in_namespace(script, [out_dir] + list(args))
    assert proc.returncode == 0, proc.stdout[-4000:]
    with open(os.path.join(str(out_dir), "result.json")) as f:
        return json.load(f)


def main(out_dir: str, bundle: str) -> int:
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    env = build_board(work)
    service = start_service(work, env)
    result = {"modes": [list(m) for m in MODES], "start_mode": START_MODE}
    try:
        from jtop import jtop  # the real client reads the real objects

        with jtop(interval=0.5) as j:
            j.ok()
            result["observed"] = {"gpu_is_mapping": isinstance(j.gpu, dict),
                                  "gpu_type": type(j.gpu).__name__,
                                  "gpu": {k: dict(v) for k, v in j.gpu.items()},
                                  "models": list(j.nvpmodel.models),
                                  "status": list(j.nvpmodel.status), "id": j.nvpmodel.id}
        result["l4t_file"] = os.path.exists("/etc/nv_tegra_release")
        doctor = subprocess.run([sys.executable, "-m", "agent", "doctor", "--json", "--state-dir",
                                 work, "--cache-dir", work], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, timeout=WAIT_S,
                                env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                    p for p in (REPO, os.environ.get("PYTHONPATH")) if p)))
        result["doctor"] = {"rc": doctor.returncode, "stderr": doctor.stderr[-2000:],
                            "report": json.loads(doctor.stdout) if doctor.stdout.strip() else None}
        state = os.path.join(out_dir, "state")
        result["success"] = calibrate(env, state, bundle, ["--seconds", "0.3"])
        with open(os.path.join(state, "calibration.json")) as f:
            result["profile"] = json.load(f)
        blocked = os.path.join(out_dir, "blocked")
        _write(blocked, "a file where the profile's folder should be\n")
        result["refused"] = calibrate(env, os.path.join(out_dir, "state-refused"), bundle,
                                      ["--profile", os.path.join(blocked, "calibration.json")])
        later = os.path.join(out_dir, "blocked-later")
        os.makedirs(later)
        result["error"] = calibrate(env, os.path.join(out_dir, "state-err"), bundle,
                                    ["--seconds", "3", "--profile",
                                     os.path.join(later, "calibration.json")],
                                    block_after_switch=later)
        result["sigterm"] = calibrate(env, os.path.join(out_dir, "state-term"), bundle,
                                      ["--seconds", "5"], sigterm_after_switch=True)
    finally:
        stop_service(service)
        with open(env["NVPMODEL_LOG"]) as f:
            result["nvpmodel_calls"] = f.read().splitlines()
        with open(os.path.join(work, "service.log")) as f:
            result["service_log_tail"] = f.read()[-3000:]
        _write(os.path.join(out_dir, "result.json"), json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
