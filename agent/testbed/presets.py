"""The shipped topologies by name (``agent/testbed/topologies/<name>.json``), the mdi-* ones also
as ``<name>-noee``: the same topology with the ``mdi-exit`` policy's early exit off."""

from __future__ import annotations

import os
from typing import List, Optional

TOPOLOGY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "topologies")
NO_EXIT_SUFFIX = "-noee"  # a shipped preset name + this = the same topology with early exit off
# -noee sets a knob of the mdi-exit policy, which the mdi-* topologies run; on another one it
# would label runs that nothing changed (dimee's tasks still exit at stage 1)
NO_EXIT_PREFIX = "mdi-"


def shipped_presets() -> List[str]:
    """Names of the shipped topologies (``agent/testbed/topologies/<name>.json``), sorted."""
    return sorted(f[:-5] for f in os.listdir(TOPOLOGY_DIR) if f.endswith(".json"))


def _split(name: str):
    """``(base, no_exit)``: ``mdi-2-node-noee`` gives ``("mdi-2-node", True)``."""
    if name.endswith(NO_EXIT_SUFFIX):
        return name[:-len(NO_EXIT_SUFFIX)], True
    return name, False


def shipped_base(name: str) -> Optional[str]:
    """The shipped topology ``name`` stands for (``mdi-2-node-noee``: ``mdi-2-node``), or None
    when it names none (a path, a ``.json`` file, an unknown name, ``-noee`` on a topology
    that is not mdi-*)."""
    if os.sep in name or name.endswith(".json"):
        return None
    base, no_exit = _split(name)
    if no_exit and not base.startswith(NO_EXIT_PREFIX):
        return None
    return base if base in shipped_presets() else None


def preset_problem(name: str) -> str:
    """Why ``name`` (no file) loads no shipped topology, for a name ``shipped_base`` refuses."""
    base, no_exit = _split(name)
    shipped = shipped_presets()
    if no_exit and base in shipped:
        return ("--topology: %r: %s turns the mdi-exit policy's early exit off, so it applies to "
                "the mdi-* topologies only (%s)" % (name, NO_EXIT_SUFFIX, ", ".join(
                    n + NO_EXIT_SUFFIX for n in shipped if n.startswith(NO_EXIT_PREFIX))))
    return ("--topology: %r is neither a file nor a shipped topology (shipped: %s; the mdi-* "
            "ones also as <name>%s, early exit off)" % (name, ", ".join(shipped), NO_EXIT_SUFFIX))
