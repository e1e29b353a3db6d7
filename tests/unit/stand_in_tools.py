"""Stand-ins for a Jetson's command-line tools (nvpmodel, jetson_clocks), put first on PATH:
small Python scripts that keep their state in a file and log every call beside it."""

from __future__ import annotations

import os
import sys
from typing import Dict


def put_on_path(tmp_path, monkeypatch, scripts: Dict[str, str], mode: str = "0"):
    """Write each ``scripts`` name -> text (``{python}`` filled in) as an executable in
    ``tmp_path/bin``, first on PATH, with the state file (``NVPMODEL_STATE``) in ``mode``;
    returns the state file (calls are logged in ``<state>.log``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)
    state = tmp_path / "nvpmodel.state"
    state.write_text(mode)
    monkeypatch.setenv("PATH", "%s%s%s" % (bin_dir, os.pathsep, os.environ["PATH"]))
    monkeypatch.setenv("NVPMODEL_STATE", str(state))
    return state
