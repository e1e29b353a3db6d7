"""``calibration.nvpmodel_cli``: nvpmodel run directly (the restore of last resort when the jtop
service is gone), against a stand-in ``nvpmodel`` on PATH that follows the real tool's command
lines (``-m ID``, ``-q``) and keeps its mode in a file."""

from __future__ import annotations


import pytest

from calibration import nvpmodel_cli
from tests.unit.stand_in_tools import put_on_path

TOOL = r'''#!{python}
import os, sys, time
state = os.environ["NVPMODEL_STATE"]
behaviour = os.environ.get("NVPMODEL_BEHAVIOUR", "")
with open(state + ".log", "a") as f:
    f.write(" ".join(sys.argv[1:]) + " | stdin=" + repr(sys.stdin.read()) + "\n")
if sys.argv[1:2] == ["-q"]:
    print("NV Power Mode: MODE_%s" % open(state).read())
    print(open(state).read())
elif sys.argv[1:2] == ["-m"]:
    if behaviour == "fail":
        print("NVPM ERROR: failed to set power mode: Device or resource busy")
        sys.exit(1)
    if behaviour == "hang":
        time.sleep(3600)
    if behaviour != "ignore":
        open(state, "w").write(sys.argv[2])
'''


@pytest.fixture
def tool(tmp_path, monkeypatch):
    """A stand-in nvpmodel first on PATH, in mode 0; returns its state file."""
    return put_on_path(tmp_path, monkeypatch, {"nvpmodel": TOOL})


def test_set_mode_switches_and_verifies_without_force(tool):
    """Rule: set_mode runs `nvpmodel -m ID` with nothing on stdin (YES would force a reboot)
    and returns once `nvpmodel -q` reports that id."""
    nvpmodel_cli.set_mode(2, timeout_s=60)
    assert tool.read_text() == "2" and nvpmodel_cli.query_mode_id() == 2
    log = (tool.parent / "nvpmodel.state.log").read_text().splitlines()
    assert log[0] == "-m 2 | stdin=''"


@pytest.mark.parametrize("behaviour, said", [
    ("fail", "nvpmodel -m 2 exited with status 1: NVPM ERROR: failed to set power mode"),
    ("hang", "nvpmodel -m 2 did not return within 1 s"),
    ("ignore", "nvpmodel -m 2 returned but nvpmodel -q reports mode id 0"),
])
def test_a_failing_hanging_or_ignored_switch_is_one_line_naming_the_command(
        tool, monkeypatch, behaviour, said):
    """Rule: an NVPM ERROR with a non-zero exit, no return within the timeout (the child is
    killed) and a mode that does not read back each raise NvpmodelFailed naming the command."""
    monkeypatch.setenv("NVPMODEL_BEHAVIOUR", behaviour)
    with pytest.raises(nvpmodel_cli.NvpmodelFailed) as err:
        nvpmodel_cli.set_mode(2, timeout_s=1 if behaviour == "hang" else 60)
    assert str(err.value).startswith(said), str(err.value)
    assert tool.read_text() == "0"


def test_no_nvpmodel_on_path_is_named(tmp_path, monkeypatch):
    """Rule: without nvpmodel on PATH the error says so, naming the command."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(nvpmodel_cli.NvpmodelFailed, match=r"^nvpmodel -m 1: nvpmodel is not on PATH"):
        nvpmodel_cli.set_mode(1, timeout_s=5)
