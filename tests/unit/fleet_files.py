"""The smallest fleet a ``fleet render`` test needs: one source ``cam`` and one worker holding
every stage of the demo bundle, linked, and an inventory of the given text."""

from __future__ import annotations

import json
from typing import Tuple


def two_node_fleet(tmp_path, inventory: str, worker: str = "w1") -> Tuple[str, str]:
    """(topology path, inventory path) written under ``tmp_path``."""
    topo = tmp_path / "topo.json"
    topo.write_text(json.dumps({
        "bundle": "demo", "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": worker, "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": worker}]}), encoding="utf-8")
    inv = tmp_path / "hosts.txt"
    inv.write_text(inventory, encoding="utf-8")
    return str(topo), str(inv)
