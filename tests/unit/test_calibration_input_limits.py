"""Calibration profiles at the limits of the JSON reader fail with one line, never a hang."""

from __future__ import annotations

import json
import os
import threading

import pytest

from agent.cli import main
from calibration.profile import ProfileError, load_profile


def _profile(tmp_path, text):
    path = tmp_path / "profile.json"
    path.write_text(text)
    return str(path)


def test_a_capacity_too_large_for_a_float_is_a_profile_error(tmp_path):
    """Rule: a 400-digit integer where a number belongs is 'must be a finite number'."""
    entry = {"board": "b", "l4t": "1", "power_mode": "M", "stage": 1, "stage_sha256": "a" * 64,
             "backend": "onnxruntime", "precision": "fp32", "flops": 1.0, "samples": 1,
             "service_time_median_s": 0.1, "service_time_p90_s": 0.1, "capacity_flops": 1,
             "measured_at": "t"}
    text = json.dumps({"format": "edge-agent-calibration-profile", "version": 1,
                       "entries": [entry]}).replace('"capacity_flops": 1', '"capacity_flops": 1' + "0" * 400)
    with pytest.raises(ProfileError, match="capacity_flops: must be a finite number") as info:
        load_profile(_profile(tmp_path, text))
    assert "0" * 100 not in str(info.value) and "401 characters" in str(info.value)


def test_a_profile_nested_too_deep_is_a_profile_error(tmp_path, capsys):
    """Rule: `calibrate --show` on JSON nested 100000 levels exits 2 with one line."""
    path = _profile(tmp_path, "[" * 100000)
    assert main(["calibrate", "--show", "--profile", path]) == 2
    err = capsys.readouterr().err
    assert "nested too deep" in err and "Traceback" not in err


def test_a_fifo_as_the_profile_is_refused_without_blocking(tmp_path):
    """Rule: a FIFO given as the profile is refused at once (no writer is waited for)."""
    path = str(tmp_path / "fifo.json")
    os.mkfifo(path)
    result = {}

    def load():
        try:
            load_profile(path)
        except ProfileError as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the open so the thread ends, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_profile blocked on a FIFO")
    assert "not a regular file" in result["error"]


@pytest.mark.parametrize("field,value,says", [
    ("stage", -5, "stage: must be >= 1"),
    ("board", "Orin\x1b[31m red", "board: must be printable text"),
    ("flops", -1e7, "flops: must be > 0"),
    ("service_time_p90_s", 0.0, "service_time_p90_s: must be > 0"),
    ("samples", -3, "samples: must be >= 1"),
    ("measured_seconds", -2.0, "measured_seconds: must be >= 0"),
])
def test_a_profile_entry_with_a_stage_below_1_or_escape_codes_is_refused(field, value, says):
    """Rule: a profile entry's stage is a stage number (>= 1), what calibrate measures is
    positive (FLOPs, times, samples; a negative count was read as it was), and its text fields
    are printable (escape codes would reach the terminal through `calibrate --show`)."""
    from calibration.profile import ProfileError, parse_profile

    entry = {"board": "b", "l4t": "35.3.1", "power_mode": "MAXN", "stage": 1,
             "stage_sha256": "a" * 64, "backend": "onnxruntime", "precision": "fp32",
             "capacity_flops": 1e9, "service_time_median_s": 0.01, "flops": 1e7, "samples": 20,
             "service_time_p90_s": 0.012, "measured_at": "2026-01-01T00:00:00Z"}
    entry[field] = value
    with pytest.raises(ProfileError, match=says):
        parse_profile({"format": "edge-agent-calibration-profile", "version": 1,
                       "entries": [entry]})


@pytest.mark.parametrize("field", ["samples", "capacity_flops"])
def test_an_integer_of_more_than_4300_digits_is_a_number_too_large(tmp_path, capsys, field):
    """Rule: an integer of more digits than Python converts (4300) in a profile is 'number too
    large' naming the field, on every Python version (3.8 has no such limit), and `calibrate
    --show` says so in one line, without Python's sys.set_int_max_str_digits hint."""
    entry = {"board": "b", "l4t": "1", "power_mode": "M", "stage": 1, "stage_sha256": "a" * 64,
             "backend": "onnxruntime", "precision": "fp32", "flops": 1.0, "samples": 1,
             "service_time_median_s": 0.1, "service_time_p90_s": 0.1, "capacity_flops": 1,
             "measured_at": "t"}
    text = json.dumps({"format": "edge-agent-calibration-profile", "version": 1,
                       "entries": [entry]}).replace('"%s": 1' % field, '"%s": 1' % field + "0" * 5000)
    path = _profile(tmp_path, text)
    with pytest.raises(ProfileError, match=r"entries\[0\]\.%s: number too large, got an integer "
                                           r"of 5001 digits \(at most 4300\)" % field):
        load_profile(path)
    assert main(["calibrate", "--show", "--profile", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "number too large" in err and "set_int_max" not in err
