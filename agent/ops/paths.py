"""The agent's paths on a device, one home for every part that writes or names them, and the
service user that runs it.

``install`` makes them (under ``--root``), ``fleet render`` writes them into each device's node
config and sheet, and the shipped unit files name the same ones. The state folder is
``agent.ops.state.DEFAULT_STATE_DIR`` (where a unit sets none), kept beside the state it holds.
"""

import os

from agent.ops.state import DEFAULT_STATE_DIR

PREFIX = "/opt/edge-agent"  # install's folder: the venv and, by default, the bundle
VENV = PREFIX + "/venv"  # as the unit files name it (install rewrites it for another venv)
VENV_BIN = VENV + "/bin"  # the agent's scripts: no PATH under sudo holds them
BUNDLE = PREFIX + "/bundle"  # the bundle, unless install --bundle / fleet render --bundle
ETC = "/etc/edge-agent"  # node configs, keys/, fleet/ (public keys), clients/, calibrate.env
CACHE = "/var/cache/edge-agent"  # engine_cache_dir of the rendered node configs
DEFAULT_USER = "edge-agent"  # the service user install makes and the units run as


def as_service_user(command: str, path: str) -> str:
    """``command`` (``edge-agent ...``) as the service user, with the venv's script (no PATH
    under sudo has it), where ``path`` is in the service's state directory: calibrate run as
    root leaves a profile there of root's, mode 0600, that the agent cannot read."""
    if not os.path.abspath(path).startswith(DEFAULT_STATE_DIR + "/"):
        return command
    return "sudo -u %s %s/%s" % (DEFAULT_USER, VENV_BIN, command)
