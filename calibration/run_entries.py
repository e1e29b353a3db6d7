"""The profile entries a calibration run makes of its measurements, and what earlier runs
measured that the next one checks against."""

from __future__ import annotations

import datetime
import os
from typing import Any, Optional

from calibration import host, profile
from calibration.measure import StageMeasurement


def utc_now() -> str:
    """Now, in UTC to the second, as profile entries record it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_entry(
    ident: host.HostIdentity,
    mode_name: str,
    mode_id: Optional[int],
    bundle: Any,
    stage: Any,
    engine: Any,
    cfg: Any,
    m: StageMeasurement,
    jetson_clocks: Optional[bool],
) -> profile.ProfileEntry:
    """The profile entry of stage ``stage`` measured as ``m`` in mode ``mode_name`` by a run
    with settings ``cfg`` (a ``runner.CalibrationConfig``)."""
    info = dict(getattr(engine, "info", {}) or {})
    return profile.ProfileEntry(
        board=ident.board,
        l4t=ident.l4t,
        jetpack=ident.jetpack,
        power_mode=mode_name,
        power_mode_id=mode_id,
        bundle=bundle.name,
        stage=stage.index,
        stage_sha256=stage.sha256,
        backend=str(info.get("backend", cfg.backend)),
        precision=str(info.get("precision", cfg.precision)),
        flops=float(stage.flops),
        samples=m.samples,
        service_time_median_s=m.service_time_median_s,
        service_time_p90_s=m.service_time_p90_s,
        capacity_flops=m.capacity_flops,
        measured_at=utc_now(),
        measured_seconds=m.measured_seconds,
        power_avg_w=m.power_avg_w,
        clocks=dict(m.clocks),
        temperature_peak_c=dict(m.temperature_peak_c),
        throttled=m.throttled,
        jetson_clocks=jetson_clocks,
        engine={k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, list))},
    )


def known_gpu_caps(cfg: Any, ident: host.HostIdentity) -> dict:
    """GPU clock cap per mode from earlier unthrottled measurements on this board and release."""
    if not os.path.exists(cfg.profile_path):
        return {}
    caps = {}
    for e in profile.load_profile(cfg.profile_path).entries:
        if (e.board, e.l4t) == (ident.board, ident.l4t) and not e.throttled and "gpu_max_khz" in e.clocks:
            caps[e.power_mode] = e.clocks["gpu_max_khz"]
    return caps
