"""``edge-agent install``: set up the agent as a systemd service on a device.

Creates the dedicated user (groups video, render and jtop where they exist), the config and key
directories, a virtual environment (``--system-site-packages`` on a Jetson, so JetPack's
TensorRT bindings are importable), installs the package into it, writes the unit files and
enables them. ``--dry-run`` prints every step without doing anything; ``--root DIR`` installs
into DIR as if it were ``/`` (an image, or a test's temp dir): steps that act on this machine's
user database are then skipped and ``systemctl --root`` only writes the enablement links.
Running it again is safe: existing users, directories, venv (made again where its interpreter
is gone; on a Jetson, set to see the system site-packages) and calibrate.env are kept (a
``--bundle`` other than the kept calibrate.env's is named, with how to change it); unit files
are rewritten, and one that differed from the shipped text is named as replaced.
Before the first step (dry run too) it checks what it can: the folders it writes are
directories or can be made, the unit files and ``--package`` exist, ``--python`` can make a venv.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from typing import List, Optional

from agent.commands.install_files import (clean_build_dir, kept_env_note, next_steps,
                                          other_configs_note, replaced_note, see_system_site,
                                          unwritable_target)
from agent.ops.atomic import write_atomic
from agent.ops.files import FileFault, check_output_dir
from agent.ops.paths import (BUNDLE, DEFAULT_USER, ETC, PREFIX, UNIT_FILES, VENV, InstallError,
                             source_checkout, unit_dir)
from agent.ops.state import DEFAULT_STATE_DIR

HELP = "install the agent as a systemd service (user, venv, units); --dry-run shows the steps"

GROUPS = ("video", "render", "jtop")
CALIBRATE_ARGS = "--modes all"  # calibrate.env's EDGE_AGENT_CALIBRATE_ARGS: every power mode
# a systemd instance name that is also a config file stem: no spaces, slashes or leading dot/dash
INSTANCE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
# what the venv's onnxruntime is, printed by the venv's own interpreter
ORT_PROBE = ("import onnxruntime as o; print(o.__version__, o.get_device(), "
             "','.join(o.get_available_providers()), o.__file__)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    parser.add_argument("--root", default="/", help="install under this directory as if it were "
                        "/ (default /); skips user creation")
    parser.add_argument("--instance", action="append", default=[], metavar="NAME",
                        help="enable edge-agent@NAME (config %s/NAME.toml); repeat for several "
                        "agents on one box" % ETC)
    parser.add_argument("--jetson", choices=("auto", "yes", "no"), default="auto",
                        help="venv sees the system site-packages (TensorRT); auto = detect "
                        "/etc/nv_tegra_release")
    parser.add_argument("--package", default=None,
                        help="what pip installs: a wheel file or a checkout (default: this "
                        "source checkout; never a name looked up on the package index)")
    parser.add_argument("--no-pip", action="store_true",
                        help="create the venv but do not pip-install into it (offline images)")
    parser.add_argument("--bundle", default=None,
                        help="bundle directory written to a new calibrate.env, absolute "
                        "(default %s; an existing calibrate.env is kept)" % BUNDLE)
    parser.add_argument("--calibrate-timer", action="store_true",
                        help="also enable the monthly calibration timer")
    parser.add_argument("--no-enable", action="store_true", help="write units but enable none")
    parser.add_argument("--user", default=DEFAULT_USER, help="service user (default %(default)s)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for the venv (default: this one)")


class Plan:
    """Steps printed as shell-like lines; executed unless ``dry_run``."""

    def __init__(self, dry_run: bool, out=None) -> None:
        self.dry_run = dry_run
        self.out = out or sys.stdout

    def say(self, line: str) -> None:
        print(("would: " if self.dry_run and not line.startswith("#") else "") + line,
              file=self.out)

    def skip(self, what: str, why: str) -> None:
        print("skip: %s (%s)" % (what, why), file=self.out)

    def run(self, argv: List[str]) -> None:
        self.say(" ".join(shlex.quote(a) for a in argv))
        if self.dry_run:
            return
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True)
        except OSError as exc:
            raise InstallError("%s: %s" % (argv[0], exc.strerror or exc)) from None
        if proc.returncode != 0:
            tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
            raise InstallError("%s failed (exit %d): %s" % (argv[0], proc.returncode, tail))

    def mkdir(self, path: str, mode: int, owner: Optional[str] = None) -> None:
        self.say("install -d -m %04o%s %s" % (mode, " -o %s -g %s" % (owner, owner) if owner else "",
                                              shlex.quote(path)))
        if self.dry_run:
            return
        try:
            os.makedirs(path, exist_ok=True)
            os.chmod(path, mode)
        except OSError as exc:
            raise InstallError("cannot create %s: %s" % (path, exc.strerror or exc)) from None
        if owner:
            import pwd

            pw = pwd.getpwnam(owner)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def write(self, path: str, text: str, mode: int = 0o644, keep=False, note: str = "") -> None:
        """Write ``text`` to ``path`` (kept if it exists and ``keep``); ``note``: said after."""
        if keep and os.path.exists(path):
            self.skip("write " + path, "exists, kept" + note)
            return
        self.say("write %s (mode %04o, %d lines)%s" % (path, mode, text.count("\n"), note))
        if self.dry_run:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomic(path, text, perms=mode)
        except OSError as exc:
            raise InstallError("cannot write %s: %s" % (path, exc.strerror or exc)) from None


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _names_in(db_file: str) -> set:
    """Names in an /etc/passwd- or /etc/group-style file (empty when it does not exist)."""
    try:
        with open(db_file) as f:
            return {line.split(":", 1)[0] for line in f if ":" in line}
    except OSError:
        return set()


def render_unit(text: str, venv: str, user: str) -> str:
    """Unit text with the venv path and service user of this installation."""
    text = text.replace(VENV, venv)
    return text.replace("User=%s\nGroup=%s" % (DEFAULT_USER, DEFAULT_USER),
                        "User=%s\nGroup=%s" % (user, user))


def package_spec(package: Optional[str]) -> str:
    """What pip installs: ``--package`` (a wheel or a directory), else this checkout. Never a
    bare name: on the public index ``edge-agent`` is an unrelated project."""
    spec = package or source_checkout()
    if spec is None:
        raise InstallError("not run from a source checkout: pass --package with the path of an "
                           "edge-agent wheel or checkout")
    if not (os.path.sep in spec or spec.endswith(".whl") or os.path.exists(spec)):
        raise InstallError("--package %r: give a wheel file or a checkout directory (a name would "
                           "be looked up on the package index, where edge-agent is another "
                           "project)" % spec)
    return os.path.abspath(spec)


def relocate_venv(plan: Plan, venv: str, final: str) -> None:
    """Point the venv's scripts (shebangs, activate) at ``final``, where the image runs it."""
    bindir = os.path.join(venv, "bin")
    plan.say("# rewrite %s -> %s in %s/*" % (venv, final, bindir))
    if plan.dry_run:
        return
    try:
        for name in sorted(os.listdir(bindir)):
            path = os.path.join(bindir, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            if venv.encode() in data and b"\0" not in data[:1024]:
                write_atomic(path, data.replace(venv.encode(), final.encode()),
                             perms=os.stat(path).st_mode & 0o7777)
    except OSError as exc:
        raise InstallError("cannot rewrite the scripts in %s: %s" % (bindir, exc.strerror or exc))


def check_onnxruntime(plan: Plan, venv: str) -> None:
    """Say which onnxruntime the venv imports; a CPU build on a Jetson gets the fix."""
    if plan.dry_run:
        plan.say("%s -c '<which onnxruntime>'" % os.path.join(venv, "bin", "python"))
        return
    proc = subprocess.run([os.path.join(venv, "bin", "python"), "-c", ORT_PROBE],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    seen = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0:
        plan.say("# WARNING: the venv has no onnxruntime; install NVIDIA's onnxruntime-gpu wheel "
                 "for this JetPack (docs/jetson.md)")
    elif " GPU " not in " %s " % seen:
        plan.say("# WARNING: the venv imports a CPU onnxruntime (%s); pip uninstall onnxruntime "
                 "there and install NVIDIA's onnxruntime-gpu wheel (docs/jetson.md)" % seen)
    else:
        plan.say("# onnxruntime in the venv: %s" % seen)


def check_targets(root: str, args: argparse.Namespace) -> None:
    """What can be checked before anything is written: the folders the steps write are
    directories (or can be made) and, when the venv is to be made, ``--python`` can make one.
    A dry run only looks; a real run also probes that each folder takes a new entry."""
    probe = not args.dry_run
    for sub in (ETC + "/keys", ETC + "/fleet", VENV,
                "/etc/systemd/system"):
        try:
            check_output_dir(_under(root, sub), "--root" if root != "/" else "target folder",
                             probe=probe)
        except FileFault as exc:
            raise InstallError(unwritable_target(str(exc))) from None
    if os.path.exists(os.path.join(_under(root, VENV), "bin", "python")):
        return  # kept: --python is not used
    need = "import venv" + ("" if args.no_pip else ", ensurepip")
    try:
        proc = subprocess.run([args.python, "-c", need], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InstallError("--python %s: %s" % (args.python, getattr(exc, "strerror", None)
                                                or exc)) from None
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        hint = "; on Debian/Ubuntu: apt install python3-venv" if "No module named" in last else ""
        raise InstallError("--python %s cannot make a virtual environment (%s)%s"
                           % (args.python, last, hint))


def run(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.root)
    alt_root = root != "/"
    if not args.dry_run and not alt_root and os.geteuid() != 0:
        raise InstallError("installing into / needs root: run it with sudo, or use --dry-run "
                           "or --root DIR")
    for name in args.instance:
        if name.endswith(".toml") and name != ".toml":  # edge-agent@x.toml reads x.toml.toml
            raise InstallError("--instance %r: give the node id (%s), not its config's file name "
                               "(edge-agent@NAME reads %s/NAME.toml)" % (name, name[:-5], ETC))
        if not INSTANCE_RE.match(name or ""):
            raise InstallError("--instance %r must be a plain name of letters, digits, _ . : - "
                               "(the node config's stem, %s/NAME.toml)" % (name, ETC))
    if args.bundle is not None and not os.path.isabs(args.bundle):
        # calibrate.env's path is read by the calibration unit, which runs in /, not here
        raise InstallError("--bundle: the bundle's path on the device must be absolute (the "
                           "calibration unit runs from /), got %r" % args.bundle)
    spec = package_spec(args.package)
    if not args.no_pip and not os.path.exists(spec):
        raise InstallError("--package: %s does not exist" % spec)
    src = unit_dir()  # the shipped unit files, found before anything is written
    check_targets(root, args)
    plan = Plan(args.dry_run)
    detected = os.path.exists(_under(root, "/etc/nv_tegra_release"))
    jetson = args.jetson == "yes" or (args.jetson == "auto" and detected)
    how = {"yes": "--jetson yes", "no": "--jetson no"}.get(
        args.jetson, "detected" if detected else "no /etc/nv_tegra_release")
    plan.say("# %s (%s)%s" % ("Jetson (L4T)" if jetson else "not a Jetson", how,
                              ", installing under " + root if alt_root else ""))

    # 1. the service user and its device groups
    groups = _names_in(_under(root, "/etc/group"))
    present = [g for g in GROUPS if g in groups]
    users = _names_in(_under(root, "/etc/passwd"))
    if alt_root:
        plan.skip("useradd/usermod %s" % args.user, "--root: not touching this machine's users")
    else:
        if args.user not in users:
            plan.run(["useradd", "--system", "--user-group", "--home-dir", DEFAULT_STATE_DIR,
                      "--no-create-home", "--shell", "/usr/sbin/nologin", args.user])
        if present:
            plan.run(["usermod", "--append", "--groups", ",".join(present), args.user])
    for g in GROUPS:
        if g not in present:
            plan.skip("group " + g, "does not exist here%s" % (
                "; install jetson-stats system-wide, then re-run" if g == "jtop" else ""))
    owner = None if alt_root else args.user

    # 2. config and key directories (keys: only the service user can read its secret key;
    # fleet: public keys, writable by root only since whoever writes it decides who is let in)
    etc = _under(root, ETC)
    plan.mkdir(etc, 0o755)
    plan.mkdir(os.path.join(etc, "keys"), 0o700, owner)
    plan.mkdir(os.path.join(etc, "fleet"), 0o755)  # the fleet's public keys (allowed_keys_dir)
    env = os.path.join(etc, "calibrate.env")
    plan.write(env, "# Read by edge-agent-calibrate.service\nEDGE_AGENT_BUNDLE=%s\n"
               "EDGE_AGENT_CALIBRATE_ARGS=%s\n" % (args.bundle or BUNDLE, CALIBRATE_ARGS),
               keep=True, note=kept_env_note(env, args.bundle))

    # 3. the virtual environment and the package
    venv_path = VENV
    venv = _under(root, venv_path)
    plan.mkdir(_under(root, PREFIX), 0o755)
    venv_python = os.path.join(venv, "bin", "python")
    if os.path.exists(venv_python):
        plan.skip("python -m venv " + venv, "exists, kept")
        if jetson:
            see_system_site(plan, venv)
    else:
        cmd = [args.python, "-m", "venv"] + (["--system-site-packages"] if jetson else []) + [venv]
        if args.no_pip:
            cmd.insert(3, "--without-pip")
        if os.path.lexists(venv_python):  # venv leaves such links as they are: made anew
            plan.say("# %s links to %s, which is gone (Python upgraded?): the venv is made again"
                     % (venv_python, os.path.realpath(venv_python)))
            cmd.insert(3, "--clear")
        plan.run(cmd)
    if args.no_pip:
        plan.skip("pip install", "--no-pip")
    else:
        # jetson: NVIDIA's onnxruntime from the system site-packages, none from the index
        clean_build_dir(plan, spec)
        pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install"]
        plan.run(pip + ["--upgrade", spec + ("[jetson]" if jetson else "[cpu]")])
        if spec.endswith(".whl"):  # pip keeps an installed version a rebuilt wheel repeats
            plan.run(pip + ["--force-reinstall", "--no-deps", spec])
        clean_build_dir(plan, spec)
        if alt_root:
            relocate_venv(plan, venv, venv_path)
        elif jetson:
            check_onnxruntime(plan, venv)

    # 4. unit files; render and jtop go into a drop-in only where those groups exist, since
    # systemd refuses to start a unit that names a missing supplementary group.
    system = _under(root, "/etc/systemd/system")
    for unit in UNIT_FILES:
        with open(os.path.join(src, unit)) as f:
            text = render_unit(f.read(), venv_path, args.user)
        dest = os.path.join(system, unit)
        plan.write(dest, text, note=replaced_note(dest, text, unit))
    extra = [g for g in present if g != "video"]
    for unit in ("edge-agent@.service", "edge-agent-calibrate.service"):
        dropin = os.path.join(system, unit + ".d", "10-device-groups.conf")
        if extra:
            text = ("# written by edge-agent install: groups that exist on this box\n"
                    "[Service]\nSupplementaryGroups=%s\n" % " ".join(extra))
            plan.write(dropin, text, note=replaced_note(dropin, text, unit))
        elif os.path.exists(dropin):
            plan.say("rm " + dropin)
            if not plan.dry_run:
                try:
                    os.remove(dropin)
                except OSError as exc:
                    raise InstallError("cannot remove %s: %s" % (dropin, exc.strerror or exc))

    # 5. enable
    systemctl = ["systemctl"] + (["--root=" + root] if alt_root else [])
    if not alt_root:
        plan.run(systemctl + ["daemon-reload"])
    units = ["edge-agent.target"] + ["edge-agent@%s.service" % i for i in args.instance]
    if args.calibrate_timer:
        units.append("edge-agent-calibrate.timer")
    if args.no_enable:
        plan.skip("systemctl enable " + " ".join(units), "--no-enable")
    else:
        plan.run(systemctl + ["enable"] + units)
    for name in args.instance:
        cfg = os.path.join(etc, name + ".toml")
        if not os.path.exists(cfg):
            other_configs_note(plan, etc, name)
            plan.say(next_steps(cfg, name, root, env, args.bundle or BUNDLE, CALIBRATE_ARGS))
    return 0
