"""The agent's paths on a device, one home for every part that writes or names them.

``install`` makes them (under ``--root``), ``fleet render`` writes them into each device's node
config and sheet, and the shipped unit files name the same ones. The state folder is
``agent.ops.state.DEFAULT_STATE_DIR`` (where a unit sets none), kept beside the state it holds.
"""

PREFIX = "/opt/edge-agent"  # install's folder: the venv and, by default, the bundle
VENV = PREFIX + "/venv"  # as the unit files name it (install rewrites it for another venv)
VENV_BIN = VENV + "/bin"  # the agent's scripts: no PATH under sudo holds them
BUNDLE = PREFIX + "/bundle"  # the bundle, unless install --bundle / fleet render --bundle
ETC = "/etc/edge-agent"  # node configs, keys/, fleet/ (public keys), clients/, calibrate.env
CACHE = "/var/cache/edge-agent"  # engine_cache_dir of the rendered node configs
