"""A source's replay set (``agent.replay_path`` of a topology) in a rendered fleet.

The topology names the replay set where it is on the workstation; a device has its own
filesystem. So ``fleet render`` copies the file into each source's files
(``OUT/devices/NODE/etc/edge-agent/replay.npz``), which the sheet's copy steps put in
``/etc/edge-agent/`` beside the node config, and the source's config names it there, as
it names its keys. Workers do not read a replay set: their configs name none.
"""

from __future__ import annotations

import os
import shutil
from typing import List

from agent.config.node import NodeConfig
from agent.errors import UsageError
from agent.ops.files import FileFault, check_regular_file
from agent.testbed.topology import Topology

REPLAY_FILE = "replay.npz"  # its name beside the node config on a device


def replay_set(topo: Topology) -> str:
    """The workstation path of the topology's replay set ("" when it names none; a relative
    path is relative to the topology file, as its bundle is), checked to be a regular file
    before anything is written."""
    path = topo.agent.get("replay_path") or ""
    where = "%s: agent.replay_path" % (topo.path or "topology")
    if not isinstance(path, str):
        raise UsageError("%s: must be the path of an .npz file, got %r" % (where, path))
    if not path:
        return ""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        check_regular_file(path, where)
    except FileFault as exc:  # the sheet would tell to copy a file that is not there
        raise UsageError(str(exc)) from None
    return path


def place_replay(obj: dict, replay: str, device_etc: str) -> None:
    """Set the replay set's device path in node-config object ``obj`` (a source's, when the
    topology has one), or take the workstation path out (a worker's)."""
    obj.pop("replay_path", None)
    if replay and obj["role"] == "source":
        obj["replay_path"] = os.path.join(device_etc, REPLAY_FILE)


def write_replay(etc: str, replay: str, cfg: NodeConfig) -> None:
    """Copy the replay set into a source's rendered ``etc`` folder (readable by the service
    user once copied to the device: 0644, as the public keys)."""
    if not (replay and cfg.role == "source"):
        return
    dst = os.path.join(etc, REPLAY_FILE)
    shutil.copyfile(replay, dst)
    os.chmod(dst, 0o644)


def sheet_lines(replay: str, cfg: NodeConfig) -> List[str]:
    """The sheet's note on the replay set: it travels with the device's files (step 1 and 2
    copy it), and where it ends up; none for a node without one."""
    if not (replay and cfg.role == "source" and cfg.replay_path):
        return []
    return ["   # the files hold the source's replay set (a copy of %s), now %s"
            % (replay, cfg.replay_path)]
