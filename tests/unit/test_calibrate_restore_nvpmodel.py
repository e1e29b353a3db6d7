"""Putting the original power mode back without jtop (``calibration.modes``): with stand-ins of
``nvpmodel`` and ``jetson_clocks`` first on PATH that follow the real tools' command lines,
run as real subprocesses; jtop itself is the fake board of ``test_jtop_adapter``."""

from __future__ import annotations

import json
import os

import pytest

from agent.commands.calibrate import mode_said
from agent.errors import UsageError
from calibration import jtop_adapter
from calibration.jtop_adapter import JtopUnavailable, ModeInfo
from calibration.modes import (ORIGINAL_MODE_FILE, ModeKeeper, ModeUnavailable, recover_saved_mode,
                               switch_mode)
from calibration.runner import CalibrationResult
from tests.unit.stand_in_tools import put_on_path
from tests.unit.test_jtop_adapter import fake_module, new_board

NVPMODEL = r'''#!{python}
import os, sys
state = os.environ["NVPMODEL_STATE"]
with open(state + ".log", "a") as f:
    f.write("nvpmodel " + " ".join(sys.argv[1:]) + " | stdin=" + repr(sys.stdin.read()) + "\n")
if sys.argv[1:2] == ["-q"]:
    print("NV Power Mode: MODE_%s" % open(state).read())
    print(open(state).read())
elif sys.argv[1:2] == ["-m"]:
    open(state, "w").write(sys.argv[2])
'''

JETSON_CLOCKS = r'''#!{python}
import os, sys
state = os.environ["NVPMODEL_STATE"]
with open(state + ".log", "a") as f:
    f.write("jetson_clocks " + " ".join(sys.argv[1:]) + "\n")
if os.environ.get("JETSON_CLOCKS_FAIL"):
    print("Error: Run this script as a root user")
    sys.exit(1)
'''


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """Stand-in nvpmodel (in mode 0) and jetson_clocks first on PATH; returns the state file
    (the calls of both are logged beside it, in ``.log``)."""
    return put_on_path(tmp_path, monkeypatch,
                       {"nvpmodel": NVPMODEL, "jetson_clocks": JETSON_CLOCKS})


def _calls(state):
    path = str(state) + ".log"
    return open(path).read().splitlines() if os.path.exists(path) else []


def _saved(state_dir, jetson_clocks):
    os.makedirs(str(state_dir), exist_ok=True)
    path = os.path.join(str(state_dir), ORIGINAL_MODE_FILE)
    with open(path, "w") as f:
        json.dump({"id": 1, "name": "15W", "pid": 1, "jetson_clocks": jetson_clocks}, f)
    return path


class _GoneDevice:
    """A device whose jtop service went away: every request is JtopUnavailable."""

    def modes(self):
        raise JtopUnavailable("the connection to the jtop service was lost (Broken pipe)")

    current_mode = modes


def test_saved_mode_records_whether_jetson_clocks_was_on(tmp_path):
    """Rule: the file saved before the first switch records jetson_clocks' state with the mode,
    so a restore without jtop (this run's or the next one's) can put it back."""
    board = new_board(tmp_path / "board.json", mode=1, jetson_clocks=True)
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        keeper = ModeKeeper(device, str(tmp_path / "state"), switch_timeout_s=30)
        keeper.switch(device.modes()[0])
        with open(keeper.path) as f:
            assert json.load(f)["jetson_clocks"] is True
        keeper.restore()


def test_restore_by_nvpmodel_turns_jetson_clocks_on_again(tools, tmp_path):
    """Rule: with jtop gone at the end of a run, the mode is set by `nvpmodel -m ID` (nothing on
    stdin) and then `jetson_clocks` (no option) runs where it was on before the run, as
    nvpmodel -m unlocks the clocks; the saved file is removed."""
    keeper = ModeKeeper(_GoneDevice(), str(tmp_path / "state"), switch_timeout_s=30)
    keeper._saved, path = True, _saved(tmp_path / "state", True)
    keeper.restore()
    assert tools.read_text() == "1" and not os.path.exists(path)
    sets = [c for c in _calls(tools) if not c.startswith("nvpmodel -q")]
    assert sets == ["nvpmodel -m 1 | stdin=''", "jetson_clocks "], sets
    assert keeper.clocks_restored and keeper.clocks_error is None


def test_jetson_clocks_off_before_the_run_is_not_run(tools, tmp_path):
    """Rule: jetson_clocks is run only where the saved state says it was on."""
    keeper = ModeKeeper(_GoneDevice(), str(tmp_path / "state"), switch_timeout_s=30)
    keeper._saved = True
    _saved(tmp_path / "state", False)
    keeper.restore()
    assert not any(c.startswith("jetson_clocks") for c in _calls(tools))
    assert not keeper.clocks_restored and keeper.clocks_error is None


def test_jetson_clocks_failing_says_the_command_that_fixes_it(tools, tmp_path, monkeypatch):
    """Rule: a jetson_clocks that fails after the mode was restored leaves the mode restored
    (file removed) and says that jetson_clocks is left as nvpmodel set it, with the command
    `sudo jetson_clocks`; the run's line says the mode was restored, but that."""
    monkeypatch.setenv("JETSON_CLOCKS_FAIL", "1")
    keeper = ModeKeeper(_GoneDevice(), str(tmp_path / "state"), switch_timeout_s=30)
    keeper._saved, path = True, _saved(tmp_path / "state", True)
    keeper.restore()
    assert tools.read_text() == "1" and not os.path.exists(path)
    assert "jetson_clocks exited with status 1" in keeper.clocks_error
    assert keeper.clocks_error.endswith("turn it on with sudo jetson_clocks")
    result = CalibrationResult(switched=True, clocks_error=keeper.clocks_error)
    said = mode_said(type("E", (), {"result": result})())
    assert said.startswith("; original power mode restored, but jetson_clocks, on before the "
                           "run, is left as nvpmodel -m 1 set it"), said


def test_run_line_says_jetson_clocks_was_restored():
    """Rule: after a restore by nvpmodel that turned jetson_clocks on again the line says both
    were restored; without it, only the mode."""
    result = CalibrationResult(switched=True, clocks_restored=True)
    assert mode_said(type("E", (), {"result": result})()) == \
        "; original power mode and jetson_clocks restored"
    result = CalibrationResult(switched=True)
    assert mode_said(type("E", (), {"result": result})()) == "; original power mode restored"


def test_crashed_runs_mode_is_recovered_by_nvpmodel_when_jtop_cannot_be_used(tools, tmp_path):
    """Rule: the next run restores a crashed run's saved mode with `nvpmodel -m ID` (and
    jetson_clocks as it was) when the jtop service cannot be opened at all."""
    path = _saved(tmp_path / "state", True)
    recover_saved_mode(None, str(tmp_path / "state"), 30,
                       JtopUnavailable("jtop service not reachable"))
    assert tools.read_text() == "1" and not os.path.exists(path)
    assert [c for c in _calls(tools) if not c.startswith("nvpmodel -q")] == \
        ["nvpmodel -m 1 | stdin=''", "jetson_clocks "]


def test_crashed_runs_mode_is_recovered_by_nvpmodel_when_jtop_goes_mid_restore(tools, tmp_path):
    """Rule: a jtop service lost while the next run restores the saved mode through it falls
    back to nvpmodel, as the end-of-run restore does."""
    path = _saved(tmp_path / "state", False)
    recover_saved_mode(_GoneDevice(), str(tmp_path / "state"), 30)
    assert tools.read_text() == "1" and not os.path.exists(path)


def test_unrecoverable_saved_mode_is_a_usage_error_naming_the_file(tmp_path, monkeypatch):
    """Rule: without jtop and without a working nvpmodel the saved mode cannot be restored:
    one UsageError naming the file, both causes and the fix; the file stays."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = _saved(tmp_path / "state", True)
    with pytest.raises(UsageError) as info:
        recover_saved_mode(None, str(tmp_path / "state"), 30,
                           JtopUnavailable("jtop service not reachable"))
    text = str(info.value)
    assert path in text and "jtop service not reachable" in text and "not on PATH" in text
    assert os.path.exists(path)


def test_mode_marked_unavailable_by_jtop_is_not_called_reboot_only():
    """Rule: a mode jtop reports not settable is said to be either reboot-only or one whose
    last switch failed (jtop's status cannot tell them apart), with the fix of each; it is
    never requested."""
    with pytest.raises(ModeUnavailable) as info:
        switch_mode(None, ModeInfo(2, "30W", settable=False))
    text = str(info.value)
    assert text.startswith("jtop marks mode 30W (id 2) unavailable: nvpmodel can only switch to "
                           "it with a reboot, or its last switch failed"), text
    assert "sudo systemctl restart jtop, then run calibrate again" in text
    assert "--modes current" in text
