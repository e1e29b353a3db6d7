"""Calibration profile format: round trip, atomic locked merge, lookup by engine identity,
stale entries and clear errors for malformed files."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace
from types import SimpleNamespace

import pytest

from calibration import host
from calibration.profile import (
    Profile,
    ProfileEntry,
    ProfileError,
    UnavailableMode,
    load_profile,
    lookup_capacity,
    parse_profile,
    profile_to_obj,
    stale_entries,
    update_profile,
)

HOST = host.HostIdentity(board="NVIDIA Jetson Xavier NX Developer Kit", l4t="35.3.1")


def _entry(**kw):
    values = dict(
        board=HOST.board,
        l4t=HOST.l4t,
        power_mode="MAXN",
        power_mode_id=0,
        bundle="demo",
        stage=1,
        stage_sha256="a" * 64,
        backend="onnxruntime",
        precision="fp32",
        flops=2.0e6,
        samples=100,
        service_time_median_s=0.001,
        service_time_p90_s=0.0012,
        capacity_flops=2.0e9,
        measured_at="2026-11-22T16:00:00Z",
        measured_seconds=2.0,
        power_avg_w=9.5,
        clocks={"gpu_max_khz": 1100000.0},
        temperature_peak_c={"CPU": 45.0},
    )
    values.update(kw)
    return ProfileEntry(**values)


def test_profile_round_trips_through_json(tmp_path):
    """What update_profile writes, load_profile reads back equal (all fields kept)."""
    path = str(tmp_path / "profile.json")
    e1 = _entry()
    e2 = _entry(stage=2, stage_sha256="b" * 64, power_avg_w=None, capacity_flops=1.0e9)
    u = UnavailableMode(HOST.board, HOST.l4t, "10W", "not active after 60 s", "2026-11-22T16:00:00Z", 3)
    written = update_profile(path, [e1, e2], [u])
    loaded = load_profile(path)
    assert loaded == written
    assert sorted(loaded.entries, key=lambda e: e.stage) == [e1, e2]
    assert loaded.unavailable == (u,)
    with open(path) as f:
        assert json.load(f)["version"] == 1


def test_same_key_is_replaced_and_other_modes_kept(tmp_path):
    """A new measurement replaces the entry with the same key; other keys stay."""
    path = str(tmp_path / "p.json")
    update_profile(path, [_entry(), _entry(power_mode="15W", power_mode_id=1)])
    update_profile(path, [_entry(capacity_flops=3.0e9)])
    entries = load_profile(path).entries
    assert len(entries) == 2
    assert {e.power_mode: e.capacity_flops for e in entries} == {
        "MAXN": 3.0e9,
        "15W": 2.0e9,
    }


def test_lookup_uses_board_l4t_mode_and_engine_identity(tmp_path):
    """lookup_capacity returns mu only for the same board, L4T, mode, stage hash, backend, precision."""
    path = str(tmp_path / "p.json")
    update_profile(path, [_entry(), _entry(power_mode="15W", capacity_flops=1.5e9,
                                           service_time_median_s=2.0e6 / 1.5e9)])
    stage = SimpleNamespace(sha256="a" * 64, index=1, flops=2.0e6)
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", "MAXN", host_identity=HOST) == 2.0e9
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", "15W", host_identity=HOST) == 1.5e9
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", "10W", host_identity=HOST) is None
    assert lookup_capacity(path, stage, "tensorrt", "fp32", "MAXN", host_identity=HOST) is None
    assert lookup_capacity(path, stage, "onnxruntime", "fp16", "MAXN", host_identity=HOST) is None
    other_l4t = replace(HOST, l4t="36.2.0")
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", "MAXN", host_identity=other_l4t) is None
    changed = SimpleNamespace(sha256="c" * 64, index=1, flops=2.0e6)
    assert lookup_capacity(path, changed, "onnxruntime", "fp32", "MAXN", host_identity=HOST) is None
    assert lookup_capacity(str(tmp_path / "absent.json"), stage, "onnxruntime", "fp32", "MAXN") is None
    assert lookup_capacity(None, stage, "onnxruntime", "fp32", "MAXN") is None


def test_lookup_defaults_to_this_machine_and_its_current_mode(tmp_path):
    """Without power_mode/host, lookup uses this machine's identity and the CPU-path mode here."""
    path = str(tmp_path / "p.json")
    ident = host.read_host_identity()
    mode = host.read_cpu_mode_name()
    update_profile(
        path,
        [_entry(board=ident.board, l4t=ident.l4t, power_mode=mode, power_mode_id=None)],
    )
    stage = SimpleNamespace(sha256="a" * 64, index=1, flops=2.0e6)
    assert lookup_capacity(path, stage, "onnxruntime", "fp32") == 2.0e9


def test_lookup_takes_the_measured_time_with_the_stages_flops_now_and_warns_if_throttled(
        tmp_path, caplog):
    """mu = the stage's flops now / the measured median time: a manifest whose FLOP count
    changed for the same engine file gets the mu of its count; an entry measured while
    throttled is used with a warning."""
    path = str(tmp_path / "p.json")
    update_profile(path, [_entry(), _entry(power_mode="15W", throttled=True)])
    recounted = SimpleNamespace(sha256="a" * 64, index=1, flops=6.0e6)  # 3x the count measured
    assert lookup_capacity(path, recounted, "onnxruntime", "fp32", "MAXN",
                           host_identity=HOST) == pytest.approx(6.0e9)
    assert not caplog.records
    stage = SimpleNamespace(sha256="a" * 64, index=1, flops=2.0e6)
    assert lookup_capacity(path, stage, "onnxruntime", "fp32", "15W", host_identity=HOST) == 2.0e9
    assert "throttled" in caplog.text


def test_stale_entries_are_those_whose_stage_hash_changed():
    """An entry measured for an older version of a bundle stage is reported as stale."""
    profile = Profile(entries=(_entry(), _entry(stage=2, stage_sha256="b" * 64)))
    stale = stale_entries(profile, "demo", {1: "a" * 64, 2: "d" * 64})
    assert [e.stage for e in stale] == [2]
    assert stale_entries(profile, "other", {1: "x"}) == []


def test_measured_mode_leaves_unavailable_list_and_unavailable_keeps_its_entries(tmp_path):
    """A mode that was unavailable and is later measured is no longer listed as unavailable;
    a measured mode recorded unavailable later (a reboot-only mode measured after booting into
    it, then skipped by a run that switches) keeps its entries, which lookups still find."""
    path = str(tmp_path / "p.json")
    update_profile(path, [], [UnavailableMode(HOST.board, HOST.l4t, "MAXN", "timeout", "t", 0)])
    update_profile(path, [_entry()])
    loaded = load_profile(path)
    assert loaded.unavailable == () and len(loaded.entries) == 1
    update_profile(path, [], [UnavailableMode(HOST.board, HOST.l4t, "MAXN", "reboot", "t", 0)])
    loaded = load_profile(path)
    assert len(loaded.entries) == 1 and len(loaded.unavailable) == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o.update(version=7), "version"),
        (lambda o: o.update(format="x"), "format"),
        (
            lambda o: o["entries"][0].pop("capacity_flops"),
            "entries[0]: missing field 'capacity_flops'",
        ),
        (
            lambda o: o["entries"][0].update(capacity_flops=-1.0),
            "entries[0].capacity_flops",
        ),
        (lambda o: o["entries"][0].update(stage="one"), "entries[0].stage"),
        (lambda o: o["entries"][0].update(clocks=[]), "entries[0].clocks"),
    ],
)
def test_malformed_profile_names_the_field(mutate, message):
    """A malformed profile is a ProfileError (a UsageError) naming the field."""
    obj = profile_to_obj(Profile(entries=(_entry(),)))
    mutate(obj)
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_profile(obj, "p.json")


def test_unreadable_profile_is_a_clear_error(tmp_path):
    """Missing or non-JSON profile files give a one-line ProfileError naming the path."""
    with pytest.raises(ProfileError, match="no such calibration profile"):
        load_profile(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_profile(str(bad))


def _writer(path, power_mode, count):
    for i in range(count):
        update_profile(path, [_entry(power_mode=power_mode, stage=i + 1, stage_sha256=str(i) * 64)])


def test_concurrent_writers_lose_no_entries(tmp_path):
    """Two processes merging into one profile at once keep every entry (file lock + atomic write)."""
    path = str(tmp_path / "p.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, mode, 8)) for mode in ("MAXN", "15W")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(load_profile(path).entries) == 16
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")]


@pytest.mark.parametrize("bad", [{"capacity_flops": 0.0}, {"capacity_flops": float("inf")},
                                 {"service_time_median_s": float("nan")}])
def test_an_entry_that_would_not_read_back_is_refused_and_the_file_kept(tmp_path, bad):
    """update_profile checks what it would write with the reader's rules: an entry the reader
    refuses (a capacity of 0 or inf, a NaN time) raises ProfileError naming the field, and the
    file keeps its good entries, readable (it used to be written and then unreadable)."""
    path = str(tmp_path / "profile.json")
    update_profile(path, [_entry(stage=2, stage_sha256="b" * 64)])
    field = next(iter(bad))
    with pytest.raises(ProfileError, match=field):
        update_profile(path, [_entry(**bad)])
    assert [e.stage for e in load_profile(path).entries] == [2]
