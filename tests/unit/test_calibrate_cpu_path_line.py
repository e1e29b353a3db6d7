"""The line calibrate logs when it takes the CPU path says why in the machine's own terms."""

import logging
import os

from calibration import jtop_adapter
from calibration.runner import log_cpu_path


def test_off_a_jetson_the_cpu_path_line_says_so_without_the_jetson_install_hint(tmp_path, caplog):
    """No /etc/nv_tegra_release under the root: one INFO line, `not a Jetson`, and no advice to
    install jetson-stats, which such a machine never needs."""
    exc = jtop_adapter.JtopUnavailable("jetson-stats is not installed (pip install 'edge-agent[jetson]')")
    with caplog.at_level(logging.INFO, logger="calibration.runner"):
        log_cpu_path(exc, str(tmp_path))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [(logging.INFO, "not a Jetson (no /etc/nv_tegra_release): calibrating the CPU "
                      "path (one mode)")]


def test_on_a_jetson_the_cpu_path_line_is_a_warning_naming_jtops_fault(tmp_path, caplog):
    """With an L4T release file (a Jetson whose jtop has no nvpmodel): a WARNING with the reason."""
    os.makedirs(tmp_path / "etc")
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 3.1\n")
    exc = jtop_adapter.NoPowerModes("jtop reports no nvpmodel")
    with caplog.at_level(logging.INFO, logger="calibration.runner"):
        log_cpu_path(exc, str(tmp_path))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "jtop reports no nvpmodel; calibrating the CPU path (one mode)")]
