"""The jtop parsers read jetson-stats' own objects, not only dicts: ``j.gpu`` is a
``GenericInterface`` (items/get, not a ``Mapping``), and the GPU clock must come out of it."""

from __future__ import annotations

import pytest

from calibration.jtop_adapter import as_mapping, parse_gpu, parse_reading

gpu_module = pytest.importorskip("jtop.core.gpu", reason="jetson-stats is not installed "
                                 "(pip install -e '.[dev]' brings it)")

# as observed from the real service on an emulated Orin (kHz)
GPU_DATA = {"gpu": {"type": "integrated", "status": {"load": 0.0, "3d_scaling": True},
                    "freq": {"governor": "nvhost_podgov", "cur": 306000, "max": 1300500,
                             "min": 306000}, "power_control": "auto"}}


def _real_gpu(data):
    gpu = gpu_module.GPU()
    gpu._update(data)  # what the jtop client does with each update from the service
    return gpu


def test_generic_interface_is_not_a_mapping_but_is_read_as_one():
    """jetson-stats' GPU object is no Mapping; as_mapping still reads it."""
    from collections.abc import Mapping

    gpu = _real_gpu(GPU_DATA)
    assert not isinstance(gpu, Mapping)
    assert as_mapping(gpu)["gpu"]["freq"]["max"] == 1300500
    assert as_mapping(42) is None


def test_gpu_clock_comes_from_jetson_stats_gpu_object():
    """parse_gpu and parse_reading give the current and max GPU clock from the real class."""
    assert parse_gpu(_real_gpu(GPU_DATA)) == (306000.0, 1300500.0)
    reading = parse_reading({}, _real_gpu(GPU_DATA), {}, {})
    assert (reading.gpu_cur_khz, reading.gpu_max_khz) == (306000.0, 1300500.0)
    assert parse_gpu(_real_gpu({})) == (None, None)


def test_jetson_stats_older_than_4_3_is_refused_with_the_reason():
    """A jtop module of release 4.2 is not used: its nvpmodel status cannot be trusted."""
    import types

    from calibration.jtop_adapter import JtopUnavailable, open_device

    old = types.SimpleNamespace(__version__="4.2.1", jtop=None, JtopException=RuntimeError)
    with pytest.raises(JtopUnavailable, match="older than 4.3"):
        with open_device(old):
            pass
