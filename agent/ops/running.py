"""Which ``edge-agent run`` processes keep their state under a folder: what ``calibrate`` must
not measure beside (their work competes for the CPU and GPU and skews the timings).

Read from ``/proc`` (Linux; the folder is passed in): each process's command line, working
folder and cgroup, and the ``state_dir`` of the node config it runs. A process this user cannot
see, or whose config it cannot read, is not found.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from agent.config.jsonfile import toml_loads
from agent.ops.files import CONFIG_MAX_BYTES, FileFault, read_bounded


_PYTHON = re.compile(r"python[0-9.]*\Z")  # python, python3, python3.8: an interpreter's name


def _agent_args(argv: List[str]) -> Optional[List[str]]:
    """The arguments after the program of an agent's process: the console script run as
    itself (``edge-agent ...``) or by its interpreter (``python .../edge-agent ...``, how a
    script's shebang line shows), or ``python -m agent ...``; None for any other process.
    A wrapper that stays as a process of its own (``timeout 60 edge-agent run``, ``sudo -u
    USER edge-agent run``) is not the agent, whose own process is found too."""
    name = os.path.basename(argv[0]) if argv else ""
    if name == "edge-agent":
        return argv[1:]
    if _PYTHON.match(name):
        if argv[1:2] and os.path.basename(argv[1]) == "edge-agent":
            return argv[2:]
        if argv[1:3] == ["-m", "agent"]:
            return argv[3:]
    return None


def _agent_config(argv: List[str]) -> str:
    """The ``--config`` of an ``edge-agent run`` command line (``_agent_args``, global options
    before ``run``); "" for any other command or process."""
    rest = _agent_args(argv)
    if rest is None:
        return ""
    k = 0
    while k < len(rest) and rest[k].startswith("-"):  # --log-level X, --log-level=X
        k += 2 if rest[k] == "--log-level" else 1
    if rest[k:k + 1] != ["run"]:
        return ""
    for i, arg in enumerate(rest[k + 1:], k + 1):
        if arg.startswith("--config="):
            return arg[len("--config="):]
        if arg == "--config" and i + 1 < len(rest):
            return rest[i + 1]
    return ""


def _state_dir_of(config: str, uid: int = -1) -> str:
    """The ``state_dir`` a node config names, as the agent reads it: ``~`` expanded (the home
    of ``uid``, the agent's user, when known), relative to the config's folder; "" when it
    cannot be read."""
    try:
        value = toml_loads(read_bounded(config, "config", CONFIG_MAX_BYTES).decode("utf-8")).get(
            "state_dir")
    except (FileFault, OSError, ValueError):  # TOMLDecodeError and UnicodeError are ValueErrors
        return ""
    if not isinstance(value, str) or not value:
        return ""
    return os.path.join(os.path.dirname(os.path.abspath(config)), _expand_home(value, uid))


def _expand_home(path: str, uid: int) -> str:
    """``os.path.expanduser`` as the agent's process did it: ``~`` is its user's home (the
    agent's HOME is that home under systemd, which sets it from the user database)."""
    if uid >= 0 and (path == "~" or path.startswith("~/")):
        import pwd

        try:
            home = pwd.getpwuid(uid).pw_dir
            return home if path == "~" else os.path.join(home, path[2:])
        except KeyError:  # a uid without a user: the agent's HOME is not known here
            pass
    return os.path.expanduser(path)


def running_agents(state_dir: str, proc: str = "/proc") -> List[Tuple[int, str, str]]:
    """Every ``edge-agent run`` process whose node config keeps its state in ``state_dir`` or
    a folder below it (a device's agents: /var/lib/edge-agent/NODE under calibrate's
    /var/lib/edge-agent), as (pid, config path, its systemd unit or ""). Found in ``proc``
    (Linux); processes this user cannot see or whose config it cannot read are not found."""
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return []
    base = os.path.realpath(state_dir).rstrip(os.sep) + os.sep
    found = []
    for pid in pids:
        where = os.path.join(proc, str(pid))
        try:
            with open(os.path.join(where, "cmdline"), "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
            config = _agent_config(argv)
            if config and not os.path.isabs(config):  # as the agent opened it: from its cwd
                config = os.path.join(os.readlink(os.path.join(where, "cwd")), config)
            uid = os.stat(where).st_uid  # the agent's user, whose home ~ is
        except OSError:  # gone meanwhile, or not ours to read
            continue
        agent_dir = _state_dir_of(config, uid) if config and pid != os.getpid() else ""
        if not agent_dir or not (os.path.realpath(agent_dir) + os.sep).startswith(base):
            continue
        unit = ""
        try:
            with open(os.path.join(where, "cgroup")) as f:
                units = re.findall(r"edge-agent@[^/\s]+\.service", f.read())
            unit = units[-1] if units else ""
        except OSError:
            pass
        found.append((pid, config, unit))
    return found


def agents_running_text(agents: List[Tuple[int, str, str]], state_dir: str) -> str:
    """What runs (``running_agents``) and how to stop it: the one line that refuses the
    calibration (the calibration unit stops and restarts the systemd ones itself)."""
    names = ["%s (pid %d, %s)" % (os.path.splitext(os.path.basename(c))[0], pid, unit or c)
             for pid, c, unit in agents]
    one = len(agents) == 1
    if any(unit for _, _, unit in agents):
        how = ("stop %s first (sudo systemctl stop edge-agent.target; start it again "
               "afterwards), or run sudo systemctl start edge-agent-calibrate, which does both"
               % ("it" if one else "them"))
    else:
        how = "stop %s first (kill %s)" % ("it" if one else "them",
                                           " ".join(str(pid) for pid, _, _ in agents))
    return ("agent%s %s %s running with %s state in %s: %s work would compete with the "
            "measurement for the CPU and GPU and skew it: %s; --force measures anyway"
            % ("" if one else "s", ", ".join(names), "is" if one else "are",
               "its" if one else "their", state_dir, "its" if one else "their", how))
