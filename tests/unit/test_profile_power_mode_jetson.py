"""The active power mode on a Jetson without jtop: ``current_power_mode`` never names the CPU
path on an L4T board (a root file system with /etc/nv_tegra_release) whose jtop service cannot
be reached; it raises ``PowerModeUnknown`` (a ``JtopUnavailable``) with the cause and the fix.
Off a Jetson, and on one whose jtop answers without nvpmodel, the CPU-path name stays. jtop
here is the stand-in client of ``tests.unit.test_jtop_adapter`` (its service "down" when its
board file does not exist)."""

from __future__ import annotations

import types

import pytest

from calibration import host, jtop_adapter
from calibration.profile import current_power_mode
from tests.unit.test_jtop_adapter import (MODELS, JtopException, fake_module, new_board,
                                          no_nvpmodel_module)

L4T_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"


def _l4t_root(tmp_path):
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "nv_tegra_release").write_text(L4T_RELEASE)
    return str(tmp_path / "root")


def test_on_a_jetson_an_unreachable_jtop_is_an_unknown_mode_with_the_fix(tmp_path):
    """Rule: on an L4T board, jtop service down or closed to this user raises PowerModeUnknown
    naming jtop, the group command and power_mode; it is never the CPU path's name."""
    down = fake_module(str(tmp_path / "no-board.json"))
    with pytest.raises(jtop_adapter.PowerModeUnknown) as err:
        current_power_mode(down, root=_l4t_root(tmp_path))
    text = str(err.value)
    assert "jtop service not reachable" in text and "/etc/nv_tegra_release" in text
    assert "sudo usermod -aG jtop " in text and "sudo systemctl enable --now jtop.service" in text
    assert 'power_mode = "NAME"' in text and "\n" not in text
    assert err.value.reason.startswith("jtop service not reachable (") and "usermod" not in \
        err.value.reason
    assert isinstance(err.value, jtop_adapter.JtopUnavailable)  # callers of JtopUnavailable see it


def test_permission_denied_is_an_unknown_mode_too(tmp_path):
    """Rule: the service refusing this user (jetson-stats' "I can't access jtop.service")
    is an unknown mode on a Jetson, as a stopped service is."""
    class Refused:
        def __init__(self, interval=0.5):
            raise JtopException("I can't access jtop.service.\nPlease logout or reboot this board.")

    closed = types.SimpleNamespace(jtop=Refused, JtopException=JtopException)
    with pytest.raises(jtop_adapter.PowerModeUnknown, match="can't access jtop.service"):
        current_power_mode(closed, root=_l4t_root(tmp_path))


def test_off_a_jetson_an_unreachable_jtop_is_the_cpu_path(tmp_path):
    """Rule: without /etc/nv_tegra_release the CPU-path mode name is the mode, as before."""
    (tmp_path / "plain").mkdir()
    down = fake_module(str(tmp_path / "no-board.json"))
    got = current_power_mode(down, root=str(tmp_path / "plain"))
    assert got == host.read_cpu_mode_name(str(tmp_path / "plain")) and got.startswith("cpu-")


def test_a_reachable_jtop_names_the_nvpmodel_mode_on_a_jetson(tmp_path):
    """Rule: with the service up the nvpmodel name is the mode (the L4T file changes nothing)."""
    board = new_board(tmp_path / "board.json", mode=2)
    assert current_power_mode(fake_module(board), root=_l4t_root(tmp_path)) == MODELS[2]


def test_a_jetson_whose_jtop_has_no_nvpmodel_keeps_the_cpu_path_name(tmp_path):
    """Rule: jtop reachable but no nvpmodel on the board (NoPowerModes): one mode, the CPU
    path's, which is what calibrate measures there."""
    module = no_nvpmodel_module()
    root = _l4t_root(tmp_path)
    assert current_power_mode(module, root=root) == host.read_cpu_mode_name(root)


def test_off_a_jetson_jtop_is_not_asked(tmp_path):
    """Rule: without /etc/nv_tegra_release no jtop client is made (its start runs nvcc, dpkg,
    ldconfig and gcc): a jtop that would answer a mode is not asked, the CPU path's name is
    the mode."""
    (tmp_path / "plain").mkdir()
    board = new_board(tmp_path / "board.json", mode=2)
    got = current_power_mode(fake_module(board), root=str(tmp_path / "plain"))
    assert got == host.read_cpu_mode_name(str(tmp_path / "plain")) and got.startswith("cpu-")
