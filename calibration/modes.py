"""Power-mode switching with wait-and-verify, and keeping the board's original mode safe.

``switch_mode`` asks nvpmodel for a mode (never with force) and waits until the board really
runs it: the mode id reads back, the nvpmodel service is no longer switching, and the GPU clock
cap has settled (the same value on ``settle_polls`` consecutive updates, and equal to
``expected_gpu_max_khz`` when the cap of that mode is already known from a previous
calibration). jtop turns jetson_clocks off around a mode change; the original jetson_clocks
state is put back and verified too. A mode that does not get there within ``timeout_s`` raises
``ModeUnavailable`` and is skipped by the caller; ``ModeSwitchFailed`` (a ``ModeUnavailable``) is
nvpmodel's own fault -- jtop reports its switch failed (an NVPM ERROR, a non-zero exit, no
return within jtop's timeout), or it still runs at ``timeout_s`` -- raised as soon as it is seen.

``ModeKeeper`` saves the original mode (and whether jetson_clocks was on) to the state directory
before the first switch and puts it back with ``restore()`` -- with ``nvpmodel -m ID`` itself
(``calibration.nvpmodel_cli``), then ``jetson_clocks`` where it was on, when the jtop service
went away mid-run; a calibration that died (power cut, SIGKILL) leaves the file behind, and the
next run's ``recover_saved_mode`` restores that mode first, the same way.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Optional

from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from calibration import nvpmodel_cli
from calibration.jtop_adapter import (JetsonDevice, JtopUnavailable, ModeInfo, ModeRequestRefused,
                                      Reading)

logger = logging.getLogger(__name__)

# File in the state directory holding the mode to restore while a calibration runs.
ORIGINAL_MODE_FILE = "calibration-original-mode.json"


class ModeUnavailable(Exception):
    """The requested power mode could not be made active; the message says what was seen."""


class ModeSwitchFailed(ModeUnavailable):
    """nvpmodel itself failed to switch (an error, or no return in time): a fault of the
    board's tool, not a property of the mode; the message names the mode and the command."""


def switch_mode(
    device: JetsonDevice,
    mode: ModeInfo,
    timeout_s: float = 60.0,
    settle_polls: int = 2,
    expected_gpu_max_khz: Optional[float] = None,
    clock: Callable[[], float] = time.monotonic,
    check: Optional[Callable[[], None]] = None,
    jetson_clocks: Optional[bool] = None,
) -> Reading:
    """Switch to ``mode`` and return the first reading taken once it is verified active.
    ``check`` is called after every update; it may raise to give up (a pending SIGTERM).
    ``jetson_clocks``: the state to leave jetson_clocks in (None: the one it has now)."""
    if not mode.settable:
        # jtop's status cannot tell these apart: a mode of another TPC mask, and one whose last
        # switch failed (kept until the service restarts)
        raise ModeUnavailable(
            "jtop marks mode %s (id %d) unavailable: nvpmodel can only switch to it with a "
            "reboot, or its last switch failed (jtop keeps that until it restarts); not "
            "requested. After a failed switch: sudo systemctl restart jtop, then run calibrate "
            "again; a reboot-only mode: calibrate it with --modes current after selecting it at "
            "boot" % (mode.name, mode.id))
    if jetson_clocks is None:
        jetson_clocks = device.jetson_clocks()
    try:
        device.request_mode(mode.id)
    except ModeRequestRefused as exc:
        raise ModeUnavailable("jtop refused mode %s (id %d): %s" % (mode.name, mode.id, exc))
    deadline = clock() + timeout_s
    stable = 0
    last_cap: Optional[float] = None
    seen = "no update"
    state_switching = False
    while clock() < deadline:
        device.wait()
        if check is not None:
            check()
        state = device.current_mode()
        state_switching = state.switching
        reading = device.read()
        seen = "mode id %d, switching %s, GPU max %s kHz" % (
            state.id,
            state.switching,
            reading.gpu_max_khz,
        )
        if state.id != mode.id and not state.switching and device.switch_failed(mode.id):
            # jtop ran nvpmodel and saw it fail: waiting out timeout_s would show nothing more
            raise ModeSwitchFailed(
                "nvpmodel -m %d (mode %s) failed: it printed an error, exited non-zero or did "
                "not return within jtop's timeout; the board stayed in mode id %d (jtop.service's "
                "log has nvpmodel's output: journalctl -u jtop.service)"
                % (mode.id, mode.name, state.id))
        if state.id != mode.id or state.switching:
            stable, last_cap = 0, None
            continue
        cap = reading.gpu_max_khz
        if expected_gpu_max_khz is not None and cap != expected_gpu_max_khz:
            stable, last_cap = 0, None
            continue
        stable = stable + 1 if (stable and cap == last_cap) else 1
        last_cap = cap
        if stable < settle_polls:
            continue
        if jetson_clocks is not None and device.jetson_clocks() != jetson_clocks:
            # jtop switches jetson_clocks off around nvpmodel changes; measure with the same
            # state the board had before (a different one would change the clocks measured)
            device.set_jetson_clocks(jetson_clocks)
            stable = 0
            continue
        return reading
    if state_switching:  # nvpmodel -m has not returned: the tool hangs, not the mode
        raise ModeSwitchFailed("mode %s (id %d) not active after %.0f s: nvpmodel -m %d did not "
                               "finish (last seen: %s)" % (mode.name, mode.id, timeout_s,
                                                           mode.id, seen))
    raise ModeUnavailable(
        "mode %s (id %d) not active after %.0f s (last seen: %s)" % (mode.name, mode.id, timeout_s, seen)
    )


class ModeKeeper:
    """Remembers the board's original power mode on disk and restores it.

    ``state_dir``: directory for ``calibration-original-mode.json``. ``switch_timeout_s`` and
    ``clock`` are passed to ``switch_mode`` for restoring.
    """

    def __init__(
        self,
        device: Optional[JetsonDevice],  # None: jtop cannot be used (``recover`` with ``lost``)
        state_dir: str,
        switch_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.path = os.path.join(state_dir, ORIGINAL_MODE_FILE)
        self.switch_timeout_s = switch_timeout_s
        self.clock = clock
        self._saved = False
        self.original_id: Optional[int] = None  # the mode saved before the first switch
        # jetson_clocks before the first switch: every mode is measured with it (a restarted
        # jtop service may have changed it)
        self._jetson_clocks: Optional[bool] = None
        # after a restore by nvpmodel of a board whose jetson_clocks was on: turned on again,
        # or why not (None: nothing to do)
        self.clocks_restored = False
        self.clocks_error: Optional[str] = None
        os.makedirs(state_dir, exist_ok=True)

    def _load(self) -> Optional[dict]:
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                obj = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.error("cannot read %s (%s); not restoring from it", self.path, exc)
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), int):
            logger.error("%s holds no mode id; not restoring from it", self.path)
            return None
        return obj

    def _restore_to(self, saved: dict) -> None:
        modes = {m.id: m for m in self.device.modes()}
        mode = modes.get(saved["id"])
        if mode is None:
            raise ModeUnavailable("saved mode id %r does not exist on this board" % saved["id"])
        if self.device.current_mode().id != mode.id:
            switch_mode(
                self.device,
                mode,
                timeout_s=self.switch_timeout_s,
                settle_polls=1,
                clock=self.clock,
            )
        os.unlink(self.path)

    def recover(self, lost: Optional[JtopUnavailable] = None) -> Optional[str]:
        """If a previous calibration died with a mode switched, restore its saved original mode:
        through jtop, or with nvpmodel itself when jtop is gone (``lost``: it cannot be used at
        all). Returns the restored mode name, or None when there was nothing to restore."""
        saved = self._load()
        if saved is None:
            return None
        logger.warning(
            "a previous calibration did not finish; restoring the original power mode %s (id %d)",
            saved.get("name"),
            saved["id"],
        )
        if lost is not None:
            self._restore_by_nvpmodel(saved, lost)
        else:
            try:
                self._restore_to(saved)
            except JtopUnavailable as exc:
                self._restore_by_nvpmodel(saved, exc)
        return str(saved.get("name"))

    def switch(
        self,
        mode: ModeInfo,
        expected_gpu_max_khz: Optional[float] = None,
        check: Optional[Callable[[], None]] = None,
    ) -> Reading:
        """Save the original mode (first time only), then ``switch_mode`` to ``mode``, with
        jetson_clocks as it was before the first switch."""
        if not self._saved:
            now = self.device.current_mode()
            # durable: after a power cut mid-calibration, the next run must restore this mode
            record = {"id": now.id, "name": now.name, "pid": os.getpid(),
                      "jetson_clocks": self.device.jetson_clocks()}
            write_atomic(self.path, json.dumps(record), perms=0o600)
            self._saved, self.original_id = True, now.id
            self._jetson_clocks = record["jetson_clocks"]
        return switch_mode(
            self.device,
            mode,
            timeout_s=self.switch_timeout_s,
            expected_gpu_max_khz=expected_gpu_max_khz,
            clock=self.clock,
            check=check,
            jetson_clocks=self._jetson_clocks,
        )

    def restore(self) -> None:
        """Put the saved original mode back (no-op if no switch happened). The file is removed
        only after the mode is verified, so a failed restore is retried by the next run."""
        if not self._saved:
            return
        saved = self._load()
        if saved is not None:
            logger.info(
                "restoring the original power mode %s (id %d)",
                saved.get("name"),
                saved["id"],
            )
            try:
                self._restore_to(saved)
            except JtopUnavailable as exc:
                self._restore_by_nvpmodel(saved, exc)
        self._saved = False

    def _restore_by_nvpmodel(self, saved: dict, lost: JtopUnavailable) -> None:
        """The jtop service went away mid-run (``lost``): set the saved mode with nvpmodel
        itself, verified by ``nvpmodel -q``; ModeUnavailable naming both causes otherwise. Then
        ``jetson_clocks`` where it was on (``nvpmodel -m`` unlocks the clocks)."""
        logger.warning("%s; restoring the original power mode %s (id %d) with nvpmodel -m %d",
                       lost, saved.get("name"), saved["id"], saved["id"])
        try:
            nvpmodel_cli.set_mode(saved["id"], self.switch_timeout_s)
        except nvpmodel_cli.NvpmodelFailed as exc:
            raise ModeUnavailable("%s, and %s" % (lost, exc))
        os.unlink(self.path)
        if saved.get("jetson_clocks") is not True:
            return
        try:
            nvpmodel_cli.jetson_clocks_on(self.switch_timeout_s)
            self.clocks_restored = True
        except nvpmodel_cli.NvpmodelFailed as exc:
            self.clocks_error = ("jetson_clocks, on before the run, is left as nvpmodel -m %d "
                                 "set it (%s): turn it on with sudo jetson_clocks"
                                 % (saved["id"], exc))
            logger.error("%s", self.clocks_error)


def recover_saved_mode(device: Optional[JetsonDevice], state_dir: str, switch_timeout_s: float,
                       lost: Optional[JtopUnavailable] = None) -> None:
    """Restore the original mode a crashed run saved in ``state_dir`` before anything else
    touches the board (engine loading may take minutes: a TensorRT build): through ``device``,
    or with nvpmodel itself where jtop cannot be used (``lost``, ``device`` None). UsageError
    with the fix when it cannot be restored."""
    keeper = ModeKeeper(device, state_dir, switch_timeout_s)
    try:
        keeper.recover(lost)
    except ModeUnavailable as exc:
        raise UsageError(
            "a previous calibration saved the original power mode in %s but it cannot be restored "
            "(%s); set it by hand (sudo nvpmodel -m ID) and delete that file" % (keeper.path, exc))
