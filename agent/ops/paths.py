"""The agent's paths on a device, one home for every part that writes or names them, the
service user that runs it, and where the shipped unit files are (``unit_dir``: ``install``
copies them, ``doctor`` reads their stop timeout when none is installed).

``install`` makes them (under ``--root``), ``fleet render`` writes them into each device's node
config and sheet, and the shipped unit files name the same ones. The state folder is
``agent.ops.state.DEFAULT_STATE_DIR`` (where a unit sets none), kept beside the state it holds.
"""

import os
import sys
from typing import Optional

from agent.errors import UsageError
from agent.ops.state import DEFAULT_STATE_DIR

PREFIX = "/opt/edge-agent"  # install's folder: the venv and, by default, the bundle
VENV = PREFIX + "/venv"  # as the unit files name it (install rewrites it for another venv)
VENV_BIN = VENV + "/bin"  # the agent's scripts: no PATH under sudo holds them
BUNDLE = PREFIX + "/bundle"  # the bundle, unless install --bundle / fleet render --bundle
ETC = "/etc/edge-agent"  # node configs, keys/, fleet/ (public keys), clients/, calibrate.env
CACHE = "/var/cache/edge-agent"  # engine_cache_dir of the rendered node configs
DEFAULT_USER = "edge-agent"  # the service user install makes and the units run as
# the shipped unit files (``unit_dir``), which install copies under /etc/systemd/system
UNIT_FILES = ("edge-agent@.service", "edge-agent.target", "edge-agent-calibrate.service",
              "edge-agent-calibrate.timer")


class InstallError(UsageError):
    """A step of the installation could not be done."""


def source_checkout() -> Optional[str]:
    """The source checkout this package runs from (its setup.cfg and systemd/), or None when
    it runs installed."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isfile(os.path.join(here, "setup.cfg")) and os.path.isdir(
            os.path.join(here, "systemd")):
        return here
    return None


def unit_dir() -> str:
    """Folder holding the shipped unit files (source checkout or the installed data files);
    ``InstallError`` naming where it looked when neither holds them all."""
    checkout = source_checkout()
    candidates = [os.path.join(checkout, "systemd")] if checkout else []
    candidates.append(os.path.join(sys.prefix, "share", "edge-agent", "systemd"))
    for c in candidates:
        if all(os.path.isfile(os.path.join(c, u)) for u in UNIT_FILES):
            return c
    raise InstallError("unit files not found in %s" % " or ".join(candidates))


def as_service_user(command: str, path: str) -> str:
    """``command`` (``edge-agent ...``) as the service user, with the venv's script (no PATH
    under sudo has it), where ``path`` is in the service's state directory: calibrate run as
    root leaves a profile there of root's, mode 0600, that the agent cannot read."""
    if not os.path.abspath(path).startswith(DEFAULT_STATE_DIR + "/"):
        return command
    return "sudo -u %s %s/%s" % (DEFAULT_USER, VENV_BIN, command)
