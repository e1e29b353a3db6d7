"""Stage timing summary (median/p90/mu, power, clocks, peaks, throttling), the progress line,
and the device identity parsers behind profile keys."""

from __future__ import annotations

import io

import numpy as np
import pytest

from calibration import host
from calibration.jtop_adapter import Reading
from calibration.measure import CpuSampler, ProgressBar, measure_stage


class _Readings:
    """A sampler replaying prepared readings (the last one repeats)."""

    def __init__(self, readings):
        self.readings = list(readings)
        self.calls = 0

    def read(self):
        r = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        return r


def _run(x):
    return np.tanh(x @ x.T)


X = np.ones((8, 8), dtype=np.float32)


def test_summary_of_a_steady_run():
    """mu = flops / median; power is averaged, caps kept, peaks per sensor, no throttling."""
    sampler = _Readings(
        [
            Reading(power_w=5.0, gpu_max_khz=1.1e6, gpu_cur_khz=1.0e6, temperatures_c={"GPU": 40.0}),
            Reading(power_w=7.0, gpu_max_khz=1.1e6, gpu_cur_khz=1.1e6, temperatures_c={"GPU": 44.0}),
        ]
    )
    m = measure_stage(_run, X, flops=1000.0, seconds=0.05, warmup_s=0.01, sampler=sampler, sample_interval_s=0.0)
    assert m.samples >= 5 and m.service_time_p90_s >= m.service_time_median_s > 0
    assert m.capacity_flops == pytest.approx(1000.0 / m.service_time_median_s)
    assert 5.0 <= m.power_avg_w <= 7.0
    assert m.clocks["gpu_max_khz"] == 1.1e6 and m.temperature_peak_c == {"GPU": 44.0}
    assert not m.throttled


def test_falling_clock_cap_is_throttling():
    """A GPU cap lower than at the start of the run counts as throttling; the lowest cap is kept."""
    sampler = _Readings([Reading(gpu_max_khz=1.1e6), Reading(gpu_max_khz=8.0e5)])
    m = measure_stage(_run, X, 1000.0, seconds=0.02, warmup_s=0.0, sampler=sampler, sample_interval_s=0.0)
    assert m.throttled and m.clocks["gpu_max_khz"] == 8.0e5


def test_sensor_at_its_limit_is_throttling():
    """A temperature reaching its sensor's max/crit limit counts as throttling."""
    hot = Reading(temperatures_c={"tj": 96.0}, temperature_limits_c={"tj": 95.0})
    m = measure_stage(_run, X, 1000.0, seconds=0.02, warmup_s=0.0, sampler=_Readings([hot]))
    assert m.throttled and m.temperature_peak_c["tj"] == 96.0


def test_without_sampler_power_and_clocks_are_absent():
    """Without readings the power is None and no clocks are invented."""
    m = measure_stage(_run, X, 1000.0, seconds=0.02, warmup_s=0.0)
    assert m.power_avg_w is None and m.clocks == {} and not m.throttled


def test_cpu_sampler_reads_this_machine():
    """The CPU-path sampler returns a Reading with no power (psutil has none) and real values."""
    r = CpuSampler().read()
    assert r.power_w is None and r.gpu_max_khz is None
    assert all(isinstance(t, float) for t in r.temperatures_c.values())


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_shows_mode_and_stage():
    """On a terminal the bar is redrawn in place; elsewhere one line at start and end."""
    tty = _Tty()
    bar = ProgressBar(tty, min_interval_s=0.0)
    bar.start("mode MAXN | stage 2 (2/4)")
    bar.update(5.0, 10.0)
    bar.finish("median 1.000 ms")
    assert "\rmode MAXN | stage 2 (2/4) [############------------]   5.0/10.0 s" in tty.getvalue()
    log = io.StringIO()
    bar = ProgressBar(log)
    bar.start("mode MAXN | stage 2 (2/4)")
    bar.update(5.0, 10.0)
    bar.finish("median 1.000 ms")
    assert log.getvalue().splitlines() == [
        "mode MAXN | stage 2 (2/4): measuring",
        "mode MAXN | stage 2 (2/4): median 1.000 ms",
    ]


def test_identity_parsers():
    """L4T release, device-tree model and CPU model are parsed from the files' contents."""
    line = "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: Sun Mar 19\n"
    assert host.parse_l4t_release(line) == "35.3.1"
    assert host.parse_l4t_release("garbage") is None
    assert (
        host.parse_device_model(b"NVIDIA Jetson Xavier NX Developer Kit\x00") == "NVIDIA Jetson Xavier NX Developer Kit"
    )
    assert host.parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\n") == "AMD EPYC"
    assert host.cpu_mode_name("schedutil", 2201.6, 1500.0) == "cpu-schedutil-2200MHz"
    assert host.cpu_mode_name(None, 0.0, 2445.4) == "cpu-nogovernor-2400MHz"


def test_identity_of_a_jetson_file_tree(tmp_path):
    """read_host_identity reads the device-tree model and nv_tegra_release under a root."""
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Orin Nano Developer Kit\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 2.0, GCID: 1\n")
    ident = host.read_host_identity(str(tmp_path))
    assert (ident.board, ident.l4t) == ("NVIDIA Orin Nano Developer Kit", "36.2.0")
    other = host.read_host_identity(str(tmp_path / "nowhere"))
    assert other.l4t == host.NO_L4T and other.board
