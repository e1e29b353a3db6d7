"""The fleet manifest, ``fleet.json``: what ``status`` and ``submit`` read of a render.

``fleet render`` writes it (``agent.fleet.render.manifest_object``); a person may edit it, so
every node entry is checked on reading: an object whose fields (when there) have the type the
render writes. A wrong one is one ``UsageError`` naming the file and the entry
(``DIR/fleet.json: nodes.cam1: must be an object``), never an error deep in a command.
Unknown fields are left alone (a newer render may add some), and a field a render of an
earlier version did not write is simply absent (``max_message_bytes``: the reader then takes
its own default).
"""

from __future__ import annotations

import os
from typing import Optional

from agent.errors import UsageError

MANIFEST = "fleet.json"
# the fields of a node entry that are read, and what each must be: text (endpoints, URLs,
# names; "" where the node has none) or a stage number
TEXT_FIELDS = ("host", "role", "control", "data", "client", "metrics", "user", "public_key",
               "metrics_tunnel", "metrics_local")
STAGE_FIELDS = ("stage", "last_stage")
# whole numbers > 0: the node's limit on one message, as its config has it
COUNT_FIELDS = ("max_message_bytes",)


def load_manifest(path: str) -> Optional[dict]:
    """A ``fleet.json`` (a render's folder or the file itself); None when there is none, and
    ``UsageError`` naming it when it is there but not a render's manifest, or when a node
    entry is not what a render writes (``check_nodes``)."""
    from agent.config.jsonfile import read_json_file

    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    if not os.path.lexists(path):
        return None
    obj = read_json_file(path, UsageError, "fleet manifest")
    if not (isinstance(obj, dict) and isinstance(obj.get("nodes"), dict)):
        raise UsageError("%s: not a fleet.json made by `fleet render` (no \"nodes\" object)"
                         % path)
    check_nodes(obj["nodes"], path)
    return obj


def check_nodes(nodes: dict, path: str) -> None:
    """Every node entry of a manifest's ``nodes``: an object, its text fields text, its
    stage fields whole numbers >= 0 and its count fields whole numbers > 0 (a bool is neither,
    though JSON's true is an int)."""
    for n, entry in nodes.items():
        where = "%s: nodes.%s" % (path, n)
        if not isinstance(entry, dict):
            raise UsageError("%s: must be an object, got %s" % (where, _shown(entry)))
        for key in TEXT_FIELDS:
            if key in entry and not isinstance(entry[key], str):
                raise UsageError("%s.%s: must be a string, got %s" % (where, key,
                                                                      _shown(entry[key])))
        for key in STAGE_FIELDS:
            v = entry.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError("%s.%s: must be a stage number (0 for a source), got %s"
                                 % (where, key, _shown(v)))
        for key in COUNT_FIELDS:
            v = entry.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise UsageError("%s.%s: must be a whole number of bytes > 0 (the node "
                                 "config's), got %s" % (where, key, _shown(v)))


def _shown(value) -> str:
    """A JSON value as the file has it, cut to a line."""
    import json

    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def require_manifest(path: str) -> dict:
    """``load_manifest`` for a command's ``--fleet DIR``: a folder without one is an error, and
    so is a manifest without a node (a render always names some: an empty ``nodes`` is an
    edit or a broken file, and a status of no node would read as a fleet all well)."""
    man = load_manifest(path)
    if man is None:
        raise UsageError("--fleet: %s holds no fleet.json (made by `fleet render`)" % path)
    if not man["nodes"]:
        where = os.path.join(path, MANIFEST) if os.path.isdir(path) else path
        raise UsageError("%s: \"nodes\" is empty: no node to read; render the fleet again "
                         "(`edge-agent fleet render`) or restore its fleet.json" % where)
    return man
