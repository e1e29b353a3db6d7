"""The allocator tuning at agent start-up: glibc's mmap and trim thresholds set once with
``mallopt``; a no-op (False, nothing called) where the process does not run on glibc."""

from __future__ import annotations

import platform
import sys

import pytest

from agent.ops import malloc


def test_both_thresholds_are_set_through_mallopt():
    calls = []

    def mallopt():
        return lambda param, value: calls.append((param, value)) or 1

    assert malloc.tune_allocator(1 << 20, mallopt=mallopt) is True
    assert calls == [(malloc.M_MMAP_THRESHOLD, 1 << 20), (malloc.M_TRIM_THRESHOLD, 1 << 20)]


def test_without_glibc_nothing_is_called_and_it_says_so():
    assert malloc.tune_allocator(mallopt=lambda: None) is False


def test_a_refused_setting_is_reported_as_not_tuned():
    assert malloc.tune_allocator(1 << 20, mallopt=lambda: (lambda param, value: 0)) is False


def test_the_default_threshold_is_one_glibc_accepts_on_this_word_size():
    import ctypes

    assert malloc.THRESHOLD_BYTES == (4 << 20) * ctypes.sizeof(ctypes.c_long)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc on Linux only")
def test_on_glibc_the_real_mallopt_accepts_the_default_thresholds():
    assert malloc._glibc_mallopt() is not None
    assert malloc.tune_allocator() is True


@pytest.mark.skipif(sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc",
                    reason="checks the fallback on a non-glibc platform")
def test_elsewhere_the_real_lookup_finds_no_mallopt():
    assert malloc._glibc_mallopt() is None
    assert malloc.tune_allocator() is False
