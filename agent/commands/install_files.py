"""What ``edge-agent install`` says about the files it keeps or replaces, a folder it cannot
write, an instance whose config is not beside the others, the build leftovers it clears from a
checkout it installs from, a kept venv it fits to a Jetson, and what comes next (``next_steps``:
under ``--root``, a rehearsal on this machine, the commands standing for the units')."""

from __future__ import annotations

import os
import shutil
from shlex import quote
from typing import Any, Optional

from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.ops.state import DEFAULT_STATE_DIR


def env_value(path: str, name: str) -> Optional[str]:
    """The last ``name=VALUE`` of the calibrate.env at ``path`` (None: no such line, or no
    file to read)."""
    try:
        with open(path) as f:
            have = [ln.split("=", 1)[1].strip() for ln in f.read().splitlines()
                    if ln.startswith(name + "=")]
    except OSError:
        return None
    return have[-1] if have else None


def kept_env_note(path: str, bundle: Optional[str]) -> str:
    """Nothing when the calibrate.env at ``path`` names ``--bundle`` (None: not given), else
    the bundle it keeps and how to change it."""
    have = env_value(path, "EDGE_AGENT_BUNDLE")
    if bundle is None or have is None or have == bundle:
        return ""
    return ("; it names EDGE_AGENT_BUNDLE=%s, so --bundle %s is not used: edit the file, or "
            "remove it and run install again" % (have, bundle))


def next_steps(cfg: str, name: str, root: str, env: str, bundle: str, args: str) -> str:
    """The closing hint for instance ``name`` whose config ``cfg`` is not written yet: write
    it, check it, calibrate a worker, then start the agent. Under a ``root`` other than ``/``
    (a rehearsal on this machine) the units' ``systemctl`` commands would act on this
    machine's own agents and their configs, not these: the hint gives the commands standing
    for them, as a rendered sheet's ``rehearsal:`` lines do (``agent.fleet.render_notes``):
    the calibration unit's command with the calibrate.env at ``env`` (else ``bundle`` and
    ``args``, what install writes there) and the state folder under ``root``, and the agent
    unit's command."""
    head = ("# next: write %s (README: Deploying to a fleet), check it with `doctor --config`, "
            % cfg)
    if root == "/":
        return head + ("calibrate a worker (`systemctl start edge-agent-calibrate`), then "
                       "`systemctl start edge-agent@%s`" % name)
    from agent.fleet.render_notes import REHEARSAL_AGENT  # here: it loads numpy, --help must not

    run = REHEARSAL_AGENT
    calibrate = "%s calibrate --bundle %s --state-dir %s %s" % (
        run, quote(env_value(env, "EDGE_AGENT_BUNDLE") or bundle),
        quote(os.path.join(root, DEFAULT_STATE_DIR.lstrip("/"))),
        env_value(env, "EDGE_AGENT_CALIBRATE_ARGS") or args)
    return head + ("calibrate a worker, then start the agent; rehearsal under %s (--root): run "
                   "each as yourself, without sudo (the agents you start write these files), "
                   "doctor too, and in place of `systemctl start edge-agent-calibrate` and "
                   "`systemctl start edge-agent@%s`, which act on this machine's own agents and "
                   "their configs, not these, run `%s`, then `%s run --config %s` (the unit's "
                   "command; a terminal of its own)" % (root, name, calibrate, run, quote(cfg)))


def replaced_note(path: str, text: str, unit: str) -> str:
    """Said when the file at ``path`` differs from the ``text`` written for ``unit``: edits
    there are lost; a ``systemctl edit`` drop-in, which install leaves alone, keeps them."""
    try:
        with open(path) as f:
            if f.read() == text:
                return ""
    except OSError:
        return ""  # a new file
    return (": replaced (it differed from what install writes: an earlier release's, or local "
            "edits, now lost; use `systemctl edit %s` for changes)" % unit)


def clean_build_dir(plan: Any, spec: str) -> None:
    """Remove setuptools' ``build/`` from the checkout ``spec`` (nothing for a wheel): pip
    builds in the checkout, and setuptools copies what ``build/lib`` still holds into the wheel,
    so a module removed from the checkout (``git pull``) would be installed again; run as root,
    it also leaves files of root's in the user's checkout. Called before and after pip."""
    build = os.path.join(spec, "build")
    if not (os.path.isdir(spec) and os.path.isdir(build)
            and os.path.isfile(os.path.join(spec, "setup.cfg"))):
        return
    plan.say("rm -rf %s  # setuptools' leftovers" % build)
    if not plan.dry_run:
        shutil.rmtree(build, ignore_errors=True)


def see_system_site(plan: Any, venv: str) -> None:
    """Make a kept venv see the system site-packages, as ``--system-site-packages`` makes a new
    one on a Jetson: one made by an earlier install with ``--jetson no`` (or before JetPack)
    cannot import JetPack's TensorRT bindings, and ``site`` reads this flag at every start."""
    cfg = os.path.join(venv, "pyvenv.cfg")
    try:
        with open(cfg) as f:
            lines = f.read().splitlines(True)
    except OSError:
        return
    key = "include-system-site-packages"
    new = [key + " = true\n" if ln.split("=", 1)[0].strip() == key else ln for ln in lines]
    if new == lines:
        return  # already true, or no such line (pyvenv.cfg of another tool)
    plan.say("# set %s = true in %s (JetPack's TensorRT bindings)" % (key, cfg))
    if not plan.dry_run:
        try:
            write_atomic(cfg, "".join(new), perms=os.stat(cfg).st_mode & 0o7777)
        except OSError as exc:
            raise UsageError("cannot write %s: %s" % (cfg, exc.strerror or exc)) from None


# what the shared folder check suggests for a folder it cannot write: meant for the agent's own
# folders, while install writes as whoever runs it
_AGENT_USER_FIX = " (give the agent's user write access)"


def unwritable_target(text: str) -> str:
    """The folder check's ``text`` for a folder install cannot reach or write, with install's
    own fix for a user other than root: run it as root, or give a ``--root`` this user can
    write (install writes as the user running it)."""
    text = text.replace(_AGENT_USER_FIX, "")
    if os.geteuid() != 0 and "Permission denied" in text:
        text += (" (install writes as the user running it: run it as root, with sudo, or give "
                 "a --root folder this user can write)")
    return text


def other_configs_note(plan: Any, etc: str, name: str) -> None:
    """Say so when ``etc`` holds node configs but not ``name``'s: a mistyped ``--instance``,
    or another device's files copied here, enables a unit that exits 78 at every start."""
    try:
        others = sorted(f[:-5] for f in os.listdir(etc)
                        if f.endswith(".toml") and os.path.isfile(os.path.join(etc, f)))
    except OSError:
        return
    if others:
        plan.say("# WARNING: --instance %s: %s holds no %s.toml but the config(s) of %s: a "
                 "mistyped node id, or another device's files? edge-agent@%s exits 78 until "
                 "its config is there" % (name, etc, name, ", ".join(others), name))
