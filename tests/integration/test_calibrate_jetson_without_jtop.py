"""``calibrate`` on a Jetson (an L4T release file under the root it is given) whose jtop service
cannot be reached refuses with one line and the fix (a UsageError: exit 2) and writes nothing:
the CPU path's entry would be filed under the Jetson's board. Off a Jetson, and on a Jetson
whose jtop answers without nvpmodel, the CPU path is measured as before. Real engines; jtop is
the stand-in client of ``tests.unit.test_jtop_adapter`` (service down: no board file)."""

from __future__ import annotations

import io
import os

import pytest

from agent.errors import EXIT_USAGE, UsageError
from calibration import host, runner
from tests.integration.calibration_fixtures import calibration_bundle
from tests.unit.test_jtop_adapter import fake_module, no_nvpmodel_module
from tests.unit.test_profile_power_mode_jetson import _l4t_root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return calibration_bundle(str(tmp_path_factory.mktemp("nojtop")))


def _config(tmp_path, bundle_dir, modes="all"):
    return runner.CalibrationConfig(bundle_dir=bundle_dir, profile_path=str(tmp_path / "p.json"),
                                    state_dir=str(tmp_path / "state"), stages=(1,), modes=modes,
                                    seconds=0.05, warmup_s=0.02, jtop_interval_s=0.002)


@pytest.mark.parametrize("modes", ["all", "current"])
def test_a_jetson_without_jtop_is_refused_with_the_fix_and_nothing_written(tmp_path, bundle_dir,
                                                                          modes):
    """Rule: --modes all/current on an L4T board with jtop down: one-line UsageError (exit 2)
    naming jtop, the group command and the service; no profile, and the run lock is free
    (a second run is refused the same way, not as "another calibration is running")."""
    cfg = _config(tmp_path, bundle_dir, modes)
    down = fake_module(str(tmp_path / "no-board.json"))
    root = _l4t_root(tmp_path)
    for _ in range(2):
        with pytest.raises(UsageError) as err:
            runner.calibrate(cfg, jtop_module=down, stream=io.StringIO(), root=root)
        text = str(err.value)
        assert text.startswith("jtop service not reachable (") and "\n" not in text
        assert "this Jetson (/etc/nv_tegra_release)" in text
        assert "sudo usermod -aG jtop " in text and "sudo systemctl enable --now jtop.service" in text
        assert getattr(err.value, "exit_status", EXIT_USAGE) == EXIT_USAGE
    assert not os.path.exists(cfg.profile_path)


def test_off_a_jetson_the_cpu_path_is_still_measured(tmp_path, bundle_dir):
    """Rule: the same run without /etc/nv_tegra_release measures the one CPU-path mode."""
    (tmp_path / "plain").mkdir()
    result = runner.calibrate(_config(tmp_path, bundle_dir),
                              jtop_module=fake_module(str(tmp_path / "no-board.json")),
                              stream=io.StringIO(), root=str(tmp_path / "plain"))
    assert [e.power_mode for e in result.entries] == [host.read_cpu_mode_name()]


def test_a_jetson_whose_jtop_has_no_nvpmodel_is_measured_as_one_mode(tmp_path, bundle_dir):
    """Rule: jtop answers but the board has no nvpmodel: the CPU-path mode, as
    ``current_power_mode`` names it there (not refused)."""
    module = no_nvpmodel_module()
    root = _l4t_root(tmp_path)
    result = runner.calibrate(_config(tmp_path, bundle_dir), jtop_module=module,
                              stream=io.StringIO(), root=root)
    assert [e.power_mode for e in result.entries] == [host.read_cpu_mode_name()]
    assert result.entries[0].l4t == "35.4.1"
