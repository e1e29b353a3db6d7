"""``fleet render``'s check of a topology against its bundle, made on the machine that renders.

The bundle the topology names (``bundle``; ``demo`` is the one shipped in the package) must
hold every stage the workers serve: a topology with more is refused with the testbed's line
(``agent.testbed.topology_bundle.check_against_bundle``). With ``--emulate`` the testbed's whole check
is made, the emulated capacities included (without it the devices measure theirs).

Render often runs on an operator's laptop while the bundle lives only on the devices: a bundle
whose manifest is not readable here is not checked, and ``unchecked_bundle_note`` says so in
one line (each device's ``run`` checks its own copy). With ``--emulate`` the capacities need
the bundle, so there a missing one is refused as before. A manifest that is readable here
but broken is refused: ``testbed.json`` names it, and driving the fleet reads it.
"""

from __future__ import annotations

import os
from typing import Any

from agent.testbed.local import bundle_stages
from agent.testbed.topology import Topology
from agent.testbed.topology_bundle import check_against_bundle
from engines.bundle import MANIFEST_NAME, load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def bundle_path(topo: Topology) -> str:
    """The path of the topology's bundle on this machine (``demo``: the package's own)."""
    return DEMO_BUNDLE_DIR if topo.bundle == "demo" else topo.bundle


def _manifest_readable(path: str) -> bool:
    """Whether ``path`` (a bundle folder or its manifest) has a manifest this user can read."""
    manifest = os.path.join(path, MANIFEST_NAME) if os.path.isdir(path) else path
    return os.path.isfile(manifest) and os.access(manifest, os.R_OK)


def _capacities_checked(topo: Topology, opts: Any) -> bool:
    """Whether the render keeps emulated capacities (``--emulate``) that the bundle must meet."""
    return bool(opts.emulate and any(w.emulate_capacity_flops for w in topo.workers))


def unchecked_bundle_note(topo: Topology, opts: Any) -> str:
    """One line when the topology's bundle is not readable here, so the render went on without
    checking its stages against it ("" when it was checked)."""
    path = bundle_path(topo)
    if _capacities_checked(topo, opts) or _manifest_readable(path):
        return ""
    return ("bundle: %s is not readable on this machine, so the topology's stages (1..%d) were "
            "not checked against it; each device's `run` checks its own copy"
            % (path, topo.num_stages))


def check_bundle(topo: Topology, opts: Any) -> None:
    """Refuse (the testbed's ``TopologyError``, ``check_against_bundle``) a topology whose
    workers serve a stage its bundle lacks, when the bundle is readable here (see the module
    docstring); with ``--emulate`` and emulated capacities, the testbed's whole check: stage
    count, thresholds at exit stages, and no stage of a worker over a day. Without
    ``--emulate`` the stage files are not hashed: only the manifest's stage list is read."""
    if unchecked_bundle_note(topo, opts):
        return
    emulated = _capacities_checked(topo, opts)
    stages = bundle_stages(load_bundle(bundle_path(topo), verify_files=emulated))
    # without --emulate the capacities are not kept (the devices measure theirs), and a
    # topology of fewer stages than its bundle is left to the devices as before
    if emulated or topo.num_stages > len(stages):
        check_against_bundle(topo, stages)
