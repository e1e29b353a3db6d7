"""jtop adapter and power-mode switching, against a FAKE of jetson-stats' documented client API.

No Jetson, jtop service or nvpmodel exists on CI, so ``FakeJtop`` below stands in for
``jtop.jtop``. It implements only the documented interface the adapter uses (4.x/7.x):
``with jtop(interval=...) as j``, ``j.ok()``, ``j.nvpmodel`` (``id``, ``name``, ``models``,
``status``, ``is_running()``, ``set_nvpmodel_id/name(..., force=False)``, assignment by id or
name), ``j.jetson_clocks`` (truthiness, assignment), ``j.power``, ``j.gpu``, ``j.cpu``,
``j.temperature``, ``j.board`` and ``JtopException``. The readings are recorded snapshots
shaped like jetson-stats' documented attributes (a Jetson Xavier NX, JetPack 5.1.1).

The board's state lives in a JSON file, as the real board outlives any process: a mode switch
takes a few updates (service busy, id changes, then the GPU cap follows one update later),
jetson_clocks ends up off after a switch (as jtop stops it around nvpmodel), a mode can be
"stuck" (its switch never completes) and a mode with ``status`` False could only be set with
force (a reboot). Every request is logged with its force flag, so tests can check that force
is never used. A board whose state says ``lost`` has lost its service: ``ok()`` raises
``JtopException("Lost connection with jtop server")``, as jetson-stats' ``ok()`` re-raises the
error its reader thread stored (documented: "raises ex_value: if jtop client fail").
"""

from __future__ import annotations

import copy
import json
import os
import time
from types import SimpleNamespace

import pytest

from calibration import jtop_adapter
from calibration.jtop_adapter import (
    ModeInfo,
    parse_cpu,
    parse_gpu,
    parse_power,
    parse_reading,
    parse_temperature,
)
from calibration.modes import ModeKeeper, ModeUnavailable, switch_mode

# Recorded from a Jetson Xavier NX (jetson-stats 4.2, JetPack 5.1.1) and trimmed.
POWER_SNAPSHOT = {
    "rail": {
        "VDD_CPU_GPU_CV": {
            "online": True,
            "type": "I2C",
            "status": "ok",
            "volt": 5016,
            "curr": 420,
            "warn": 32760,
            "crit": 32760,
            "power": 2106,
            "avg": 1998,
        },
        "VDD_SOC": {
            "online": True,
            "type": "I2C",
            "status": "ok",
            "volt": 5016,
            "curr": 304,
            "warn": 32760,
            "crit": 32760,
            "power": 1524,
            "avg": 1510,
        },
    },
    "tot": {
        "online": True,
        "type": "I2C",
        "status": "ok",
        "volt": 5032,
        "curr": 1112,
        "warn": 32760,
        "crit": 32760,
        "power": 5595,
        "avg": 5420,
        "name": "VDD_IN",
    },
}
GPU_SNAPSHOT = {
    "gpu": {
        "type": "integrated",
        "status": {
            "railgate": False,
            "tpc_pg_mask": False,
            "3d_scaling": True,
            "load": 37.5,
        },
        "freq": {
            "governor": "nvhost_podgov",
            "cur": 1109250,
            "max": 1109250,
            "min": 114750,
            "GPC": [1109250],
        },
        "power_control": "auto",
    }
}
_CORE = {
    "online": True,
    "governor": "schedutil",
    "freq": {"min": 115200, "max": 1907200, "cur": 1420800},
    "info_freq": {"min": 115200, "max": 1907200, "cur": 1420800},
    "idle_state": {"WFI": 1, "c6": 1},
    "model": "ARMv8 Processor rev 0 (v8l)",
    "user": 12.0,
    "nice": 0.0,
    "system": 3.0,
    "idle": 85.0,
}
CPU_SNAPSHOT = {
    "total": {"user": 12.0, "nice": 0.0, "system": 3.0, "idle": 85.0},
    "cpu": [dict(_CORE) for _ in range(4)]
    + [
        {
            "online": False,
            "governor": "",
            "freq": {},
            "info_freq": {},
            "idle_state": {},
            "model": "",
            "user": 0,
            "nice": 0,
            "system": 0,
            "idle": 0,
        }
    ]
    * 2,
}
TEMPERATURE_SNAPSHOT = {
    "AO": {"temp": 39.5, "online": True},
    "CPU": {"temp": 41.0, "online": True},
    "GPU": {"temp": 40.5, "online": True},
    "thermal": {"temp": 40.7, "online": True},
    "iwlwifi": {"temp": -256.0, "online": False},
    "tj": {"temp": 41.5, "online": True, "max": 95.0, "crit": 105.0},
}
BOARD_SNAPSHOT = {
    "platform": {
        "Machine": "aarch64",
        "System": "Linux",
        "Distribution": "Ubuntu 20.04 focal",
    },
    "hardware": {
        "Model": "NVIDIA Jetson Xavier NX Developer Kit",
        "Module": "NVIDIA Jetson Xavier NX",
        "L4T": "35.3.1",
        "Jetpack": "5.1.1",
    },
    "libraries": {"CUDA": "11.4.315", "TensorRT": "8.5.2.2"},
}
# Xavier NX modes (L4T 35.x): names, per-mode GPU and CPU caps (kHz); id 3 needs a reboot.
MODELS = [
    "MODE_15W_2CORE",
    "MODE_15W_4CORE",
    "MODE_15W_6CORE",
    "MODE_10W_DESKTOP",
    "MODE_20W_6CORE",
]
STATUS = [True, True, True, False, True]
GPU_CAPS_KHZ = [1109250, 1109250, 1109250, 510000, 1109250]
CPU_CAPS_KHZ = [1907200, 1420800, 1420800, 1190400, 1420800]


class JtopException(Exception):
    """Stand-in for ``jtop.JtopException``."""


def new_board(path, mode=0, stuck=(), jetson_clocks=True):
    """Write a fresh board state file; returns its path."""
    state = {
        "mode": mode,
        "pending": None,
        "ticks": 0,
        "cap_mode": mode,
        "stuck": list(stuck),
        "jetson_clocks": jetson_clocks,
        "requests": [],
        "updates": 0,
    }
    with open(str(path), "w") as f:
        json.dump(state, f)
    return str(path)


def read_board(path):
    with open(str(path)) as f:
        return json.load(f)


def _write_board(path, state):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, str(path))


class _NVPModel:
    """Documented ``jetson.nvpmodel`` object (reads from the owning FakeJtop's state)."""

    def __init__(self, owner):
        self._owner = owner

    @property
    def id(self):
        return self._owner._state["mode"]

    @property
    def name(self):
        return MODELS[self.id]

    @property
    def models(self):
        return list(MODELS)

    @property
    def status(self):
        return list(STATUS)

    def is_running(self):
        return self._owner._state["pending"] is not None

    def set_nvpmodel_id(self, nvpmodel_id, force=False):
        if not isinstance(nvpmodel_id, int):
            raise ValueError("Use an int")
        if nvpmodel_id < 0 or nvpmodel_id > len(MODELS) - 1:
            raise JtopException("NV Power Model ID %d does not exists!" % nvpmodel_id)
        self._owner._request(nvpmodel_id, force)

    def set_nvpmodel_name(self, nvpmodel_name, force=False):
        if nvpmodel_name not in MODELS:
            raise JtopException("NV Power Model %s does not exists!" % nvpmodel_name)
        self._owner._request(MODELS.index(nvpmodel_name), force)

    def __repr__(self):
        return self.name


class _JetsonClocks:
    def __init__(self, on):
        self._on = on

    def __bool__(self):
        return self._on


class FakeJtop:
    """Fake ``jtop.jtop`` over a board state file (see the module docstring)."""

    def __init__(self, board_path, interval=0.5):
        self._path = board_path
        self._interval = float(interval)
        self._state = None

    def __enter__(self):
        if not os.path.exists(self._path):
            # jetson-stats' own text, line break included
            raise JtopException("The jtop.service is not active. Please run:\nsudo jtop --install-service")
        self._state = read_board(self._path)
        return self

    def __exit__(self, *exc):
        return False

    def _request(self, mode_id, force):
        state = read_board(self._path)
        state["requests"].append({"id": mode_id, "force": bool(force)})
        if mode_id != state["mode"] or force:
            state["pending"], state["ticks"] = mode_id, 0
        _write_board(self._path, state)
        self._state = state

    def ok(self):
        time.sleep(self._interval)
        state = read_board(self._path)
        if state.get("lost"):
            raise JtopException("Lost connection with jtop server")
        state["updates"] += 1
        if state["pending"] is not None and state["pending"] not in state["stuck"] and STATUS[state["pending"]]:
            state["ticks"] += 1
            if state["ticks"] == 2:  # the mode id reads back while the service is still busy
                state["mode"] = state["pending"]
                state["jetson_clocks"] = False  # jtop stops jetson_clocks around nvpmodel
            elif state["ticks"] == 3:
                state["pending"] = None
        elif state["cap_mode"] != state["mode"]:
            state["cap_mode"] = state["mode"]  # the GPU cap follows one update later
        _write_board(self._path, state)
        self._state = state
        return True

    @property
    def nvpmodel(self):
        return _NVPModel(self)

    @nvpmodel.setter
    def nvpmodel(self, value):
        nvp = _NVPModel(self)
        if isinstance(value, int):
            nvp.set_nvpmodel_id(value, force=False)
        else:
            nvp.set_nvpmodel_name(value, force=False)

    @property
    def jetson_clocks(self):
        return _JetsonClocks(self._state["jetson_clocks"])

    @jetson_clocks.setter
    def jetson_clocks(self, value):
        if not isinstance(value, bool):
            raise TypeError("Use a boolean")
        state = read_board(self._path)
        state["jetson_clocks"] = value
        _write_board(self._path, state)
        self._state = state

    @property
    def power(self):
        return copy.deepcopy(POWER_SNAPSHOT)

    @property
    def gpu(self):
        snap = copy.deepcopy(GPU_SNAPSHOT)
        snap["gpu"]["freq"]["max"] = GPU_CAPS_KHZ[self._state["cap_mode"]]
        snap["gpu"]["freq"]["cur"] = min(snap["gpu"]["freq"]["cur"], snap["gpu"]["freq"]["max"])
        return snap

    @property
    def cpu(self):
        snap = copy.deepcopy(CPU_SNAPSHOT)
        for core in snap["cpu"]:
            if core["online"]:
                core["freq"]["max"] = CPU_CAPS_KHZ[self._state["cap_mode"]]
        return snap

    @property
    def temperature(self):
        return copy.deepcopy(TEMPERATURE_SNAPSHOT)

    @property
    def board(self):
        return copy.deepcopy(BOARD_SNAPSHOT)


def fake_module(board_path):
    """A module-like object with the ``jtop`` package's names: ``jtop`` and ``JtopException``."""
    return SimpleNamespace(
        jtop=lambda interval=0.5: FakeJtop(board_path, interval),
        JtopException=JtopException,
    )


class _NoModes:
    """A jtop client on a board without nvpmodel (``nvpmodel`` None, as jtop gives there)."""

    nvpmodel = None

    def __init__(self, interval=0.5):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def no_nvpmodel_module():
    """A module-like object like ``fake_module``'s whose board has no nvpmodel."""
    return SimpleNamespace(jtop=_NoModes, JtopException=JtopException)


def _forced(board):
    return [r for r in board["requests"] if r["force"]]


# ---------------------------------------------------------------- parsing recorded snapshots


def test_parse_recorded_snapshots():
    """Parsing the documented attribute shapes gives W, kHz and C with offline sensors dropped."""
    assert parse_power(POWER_SNAPSHOT) == pytest.approx(5.595)
    assert parse_power({}) is None  # a board without power sensors
    assert parse_gpu(GPU_SNAPSHOT) == (1109250.0, 1109250.0)
    assert parse_cpu(CPU_SNAPSHOT) == (1420800.0, 1907200.0)  # offline cores ignored
    temps, limits = parse_temperature(TEMPERATURE_SNAPSHOT)
    assert "iwlwifi" not in temps and temps["CPU"] == 41.0
    assert limits == {"tj": 95.0}
    reading = parse_reading(POWER_SNAPSHOT, GPU_SNAPSHOT, CPU_SNAPSHOT, TEMPERATURE_SNAPSHOT)
    assert reading.power_w == pytest.approx(5.595) and reading.gpu_max_khz == 1109250.0
    assert parse_reading(None, None, None, None).temperatures_c == {}


def test_modes_and_jetpack_through_the_adapter(tmp_path):
    """The adapter lists modes with their settable flag and reads the JetPack release."""
    board = new_board(tmp_path / "board.json", mode=2)
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        modes = device.modes()
        assert [m.name for m in modes] == MODELS
        assert [m.settable for m in modes] == STATUS
        assert device.current_mode().name == "MODE_15W_6CORE"
        assert device.jetpack() == "5.1.1"
        assert device.jetson_clocks() is True


def test_jtop_exception_becomes_a_clear_unavailable_message(tmp_path):
    """Without the jtop service the adapter raises JtopUnavailable with one clear line (the
    line break in jetson-stats' message is not passed on: a log record stays one line)."""
    with pytest.raises(jtop_adapter.JtopUnavailable, match="jtop service not reachable.*jtop.service") as err:
        with jtop_adapter.open_device(fake_module(str(tmp_path / "absent.json"))):
            pass
    assert "\n" not in str(err.value) and "Please run: sudo jtop --install-service" in str(err.value)


# ---------------------------------------------------------------- switching


def test_a_service_lost_mid_run_is_jtop_unavailable_not_a_traceback(tmp_path):
    """When the jtop service goes away, jetson-stats' ``ok()`` raises JtopException (it does
    not return False): waiting for the next update then raises JtopUnavailable, the error the
    calibration run and its command turn into one clear line."""
    board = new_board(tmp_path / "board.json")
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        device.wait()
        state = read_board(board)
        state["lost"] = True
        _write_board(board, state)
        with pytest.raises(jtop_adapter.JtopUnavailable, match="Lost connection with jtop"):
            device.wait()


def test_switch_waits_until_id_service_and_gpu_cap_are_verified(tmp_path):
    """switch_mode returns only when the id reads back, the service is idle and the new GPU cap
    shows; jetson_clocks is put back on; the request never uses force."""
    board = new_board(tmp_path / "board.json", mode=0, jetson_clocks=True)
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        reading = switch_mode(device, ModeInfo(4, MODELS[4], True), timeout_s=30)
    state = read_board(board)
    assert state["mode"] == 4 and state["pending"] is None and state["cap_mode"] == 4
    assert reading.cpu_max_khz == CPU_CAPS_KHZ[4]  # the reading was taken with the new caps
    assert state["jetson_clocks"] is True
    assert state["requests"] == [{"id": 4, "force": False}]
    assert state["updates"] >= 4  # it waited through the switching updates


def test_mode_needing_reboot_is_unavailable_and_never_requested(tmp_path):
    """A mode nvpmodel could only set with force is marked unavailable without any request."""
    board = new_board(tmp_path / "board.json")
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        with pytest.raises(ModeUnavailable, match="reboot"):
            switch_mode(device, device.modes()[3], timeout_s=5)
    assert read_board(board)["requests"] == []


def test_mode_that_never_becomes_active_times_out_as_unavailable(tmp_path):
    """A switch that does not complete within the timeout raises ModeUnavailable naming what was seen."""
    board = new_board(tmp_path / "board.json", stuck=[2])
    with jtop_adapter.open_device(fake_module(board), interval_s=0.005) as device:
        with pytest.raises(ModeUnavailable, match="not active after .*switching True"):
            switch_mode(device, device.modes()[2], timeout_s=0.3)
    assert _forced(read_board(board)) == []


def test_expected_gpu_cap_mismatch_is_not_accepted(tmp_path):
    """When the mode's GPU cap is known, a board showing another cap is not taken as switched."""
    board = new_board(tmp_path / "board.json")
    with jtop_adapter.open_device(fake_module(board), interval_s=0.002) as device:
        with pytest.raises(ModeUnavailable, match="GPU max 1109250"):
            switch_mode(device, device.modes()[1], timeout_s=0.3, expected_gpu_max_khz=624750.0)


def test_keeper_saves_then_restores_the_original_mode(tmp_path):
    """ModeKeeper writes the original mode before the first switch and restores it (file removed)."""
    board = new_board(tmp_path / "board.json", mode=1)
    state_dir = str(tmp_path / "state")
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        keeper = ModeKeeper(device, state_dir, switch_timeout_s=30)
        keeper.switch(device.modes()[0])
        with open(keeper.path) as f:
            assert json.load(f)["id"] == 1
        keeper.switch(device.modes()[4])
        keeper.restore()
        assert not os.path.exists(keeper.path)
    state = read_board(board)
    assert state["mode"] == 1 and _forced(state) == []


def test_restore_failure_keeps_the_saved_mode_for_the_next_run(tmp_path):
    """If the original mode cannot be restored, the saved file stays so the next run retries."""
    board = new_board(tmp_path / "board.json", mode=1)
    state_dir = str(tmp_path / "state")
    with jtop_adapter.open_device(fake_module(board), interval_s=0.001) as device:
        keeper = ModeKeeper(device, state_dir, switch_timeout_s=0.2)
        keeper.switch(device.modes()[0])
        state = read_board(board)
        state["stuck"] = [1]
        _write_board(board, state)
        with pytest.raises(ModeUnavailable):
            keeper.restore()
    assert os.path.exists(os.path.join(state_dir, "calibration-original-mode.json"))
