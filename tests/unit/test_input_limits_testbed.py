"""Out-of-range input to testbed, fleet render, report and plan: one error line, exit 2.

Every number that sizes a run (stages, times, rates, rounds) has an upper bound, so a typo
cannot start a run that never ends; capacities and link rates take a scenario's range; hosts
and records that could not be used are refused (or skipped as damaged) up front.
"""

from __future__ import annotations

import json
import re

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.fleet.inventory import host_problem
from agent.config.checks import RATE_RANGE
from agent.testbed.bounds import MAX_RATE, MAX_SECONDS, MAX_STAGES, check_load
from agent.testbed.report import is_record, read_records
from agent.testbed.rundir import new_run_dir
from agent.testbed.topology import DEFAULT_TOPOLOGY, TopologyError, parse_topology


def _default():
    with open(DEFAULT_TOPOLOGY) as f:
        return json.load(f)


def _write(tmp_path, obj, name="topo.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("key,value", [("last_stage", 10 ** 12), ("stage", 10 ** 12),
                                       ("last_stage", MAX_STAGES + 1)])
def test_a_worker_stage_beyond_the_bound_is_refused_at_load_not_looped_over(key, value):
    """Rule: a worker's stage or last_stage above MAX_STAGES is a TopologyError naming the
    field (it used to loop over every stage up to it)."""
    obj = _default()
    obj["workers"][0][key] = value
    with pytest.raises(TopologyError, match=r"workers\[0\]\.%s: must be .*%d" % (key, MAX_STAGES)):
        parse_topology(obj)


def _render(tmp_path, obj) -> int:
    """``fleet render`` of topology ``obj`` with an inventory placing every node."""
    inv = tmp_path / "inv.txt"
    inv.write_text("".join("%s 10.0.0.%d\n" % (n["id"], i + 1) for i, n in
                           enumerate(obj["sources"] + obj["workers"])))
    return main(["fleet", "render", "--topology", _write(tmp_path, obj), "--inventory",
                 str(inv), "--out", str(tmp_path / "out")])


def test_fleet_render_and_report_refuse_a_huge_last_stage_in_one_line(tmp_path, capsys):
    """Rule: fleet render of a topology with a huge last_stage exits 2 with one line."""
    obj = _default()
    obj["workers"][0]["last_stage"] = 10 ** 12
    assert _render(tmp_path, obj) == 2 and "last_stage" in _err(capsys)


@pytest.mark.parametrize("where,key", [("workers", "emulate_capacity_flops"),
                                       ("links", "rate_bytes_s"),
                                       ("links", "config_rate_bytes_s")])
@pytest.mark.parametrize("value", [1e-300, 1e300])
def test_capacities_and_link_rates_take_the_scenario_range_at_load(where, key, value):
    """Rule: emulated capacities and link rates outside the RATE_RANGE (what the wire takes) are
    refused when the topology is read, naming the topology field."""
    obj = _default()
    obj[where][0][key] = value
    with pytest.raises(TopologyError, match=re.escape("%s[0].%s: must be in [%g, %g]"
                                                      % (where, key, *RATE_RANGE))):
        parse_topology(obj)
    obj[where][0][key] = RATE_RANGE[1]  # the bounds themselves are fine
    parse_topology(obj)


@pytest.mark.parametrize("key", ["warmup_s", "slot_s"])
def test_topology_times_are_at_most_a_day(key):
    """Rule: warmup_s and slot_s above MAX_SECONDS are refused naming the field."""
    obj = _default()
    obj[key] = 1e300
    with pytest.raises(TopologyError, match=r"%s: must be in .*86400" % key):
        parse_topology(obj)
    obj[key] = MAX_SECONDS
    assert getattr(parse_topology(obj), key) == MAX_SECONDS


def test_a_slot_below_a_millisecond_is_refused_naming_slot_s_and_its_range(tmp_path, capsys):
    """Rule: a tiny positive slot_s (1e-300) is refused by the topology reader naming its own
    slot_s key and the range [0.001, 86400], not a node-config field derived from it."""
    obj = _default()
    obj["slot_s"] = 1e-300
    with pytest.raises(TopologyError, match=r"^slot_s: must be in \[0.001, 86400\], got 1e-300"):
        parse_topology(obj)
    path = _write(tmp_path, obj)
    rc = main(["testbed", "--topology", path, "--policies", "cf", "--rates", "1", "--duration",
               "1", "--no-plots", "--out", str(tmp_path / "tb")])
    err = _err(capsys)
    assert rc == 2 and "%s: slot_s: must be in [0.001, 86400]" % path in err, err
    assert "slot_length_s" not in err
    obj["slot_s"] = 0.001  # the bound itself is fine
    assert parse_topology(obj).slot_s == 0.001


def test_rates_over_the_bounds_are_refused_naming_the_option():
    """Rule: a total rate above MAX_RATE, or one making more than MAX_TASKS tasks in a load,
    is a UsageError naming the option."""
    with pytest.raises(UsageError, match=r"--rates: 1e\+300 tasks/s is over the limit"):
        check_load([1.0, 1e300], 10.0)
    with pytest.raises(UsageError, match=r"rates: 100000 tasks/s for 86400 s .* at most"):
        check_load([1e5], MAX_SECONDS, "topo.json: rates")
    check_load([MAX_RATE], 10.0)


@pytest.mark.parametrize("rates", ["1e300", "1e9%", ""])
def test_testbed_refuses_huge_rates_before_running(tmp_path, capsys, rates):
    """Rule: testbed --rates 1e300 (or 1e9% of the capacity), or an empty --rates (a mistake,
    not the defaults), exits 2 in one line naming --rates, before any run folder exists."""
    rc = main(["testbed", "--policies", "cf", "--rates", rates, "--duration", "1", "--no-plots",
               "--out", str(tmp_path / "tb")])
    assert rc == 2 and _err(capsys).startswith("edge-agent testbed: error: --rates:")
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("rates,shown", [("1e9%", "'1e9%'"), ("5e6", "'5e6'"),
                                         ("2,1e400", "'1e400'")])
def test_a_rate_over_the_bound_is_quoted_as_typed_with_the_allowed_range(tmp_path, capsys,
                                                                         rates, shown):
    """Rule: testbed --rates with an item over MAX_RATE (tasks/s, or N% of the capacity) quotes
    the item as the user typed it and the allowed range (0, 1e+06] tasks/s, and for N% the
    percentage that range is; never only the rate computed from it."""
    rc = main(["testbed", "--policies", "cf", "--rates", rates, "--duration", "1", "--no-plots",
               "--out", str(tmp_path / "tb")])
    err = _err(capsys)
    assert rc == 2 and err.startswith("edge-agent testbed: error: --rates: %s must be in "
                                      "(0, 1e+06] tasks/s" % shown), err
    if rates.endswith("%"):
        assert re.search(r"up to [0-9.e+]+% of the capacity, [0-9.e+]+ tasks/s\)$", err), err
    assert not (tmp_path / "tb").exists()


def test_a_slot_shorter_than_its_configuration_phase_names_the_topology_fields(tmp_path, capsys):
    """Rule: a topology slot_s within range but not longer than the configuration phase
    (rounds_per_slot x round_interval_s, from its "agent" block or the agents' defaults) is one
    line naming slot_s and where each factor comes from, not a derived node-config field."""
    obj = _default()
    obj["slot_s"] = 0.5
    obj["agent"]["rounds_per_slot"] = 30
    obj["agent"].pop("round_interval_s", None)
    path = _write(tmp_path, obj)
    rc = main(["testbed", "--topology", path, "--policies", "cf", "--rates", "1",
               "--duration", "1", "--no-plots", "--out", str(tmp_path / "tb")])
    err = _err(capsys)
    assert rc == 2 and err == ("edge-agent testbed: error: %s: slot_s: 0.5 s must be longer than "
                               "the configuration phase, 1.5 s (agent.rounds_per_slot 30 x "
                               "round_interval_s 0.05 s (the default))" % path), err
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("rates", ["0.001", "1e-9%"])
def test_a_rate_that_rounds_to_zero_is_refused_as_typed(tmp_path, capsys, rates):
    """Rule: runs are named by their rate to 0.01 tasks/s: a rate below that (it rounded to a
    run of 0 tasks/s) is one line quoting the item, before anything runs."""
    rc = main(["testbed", "--policies", "cf", "--rates", rates, "--duration", "1", "--no-plots",
               "--out", str(tmp_path / "tb")])
    err = _err(capsys)
    assert rc == 2 and err.startswith("edge-agent testbed: error: --rates: %r is " % rates) \
        and err.endswith("tasks/s, below 0.01"), err
    assert not (tmp_path / "tb").exists()


def test_a_policy_named_twice_is_refused_before_anything_runs(tmp_path, capsys):
    """Rule: each policy's runs have one folder, so a policy named twice in --policies (its
    second run would overwrite the first) is one line naming it, as a rate given twice is,
    and no run folder is made."""
    rc = main(["testbed", "--policies", "dtoee,cf,dtoee", "--rates", "5", "--duration", "1",
               "--no-plots", "--out", str(tmp_path / "tb")])
    err = _err(capsys)
    assert rc == 2 and err == ("edge-agent testbed: error: --policies: 'dtoee,cf,dtoee' gives "
                               "dtoee twice"), err
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("at", [400, 5.5])
def test_a_fault_due_once_the_load_is_over_is_refused_naming_the_loads_length(tmp_path, capsys,
                                                                              at):
    """Rule: a fault whose "at" is not before the end of the load (warm-up + --duration) would
    never be injected: it is one line naming the fault and the load's length, before any run
    folder or agent is made."""
    obj = _default()
    obj["warmup_s"] = 2.5
    obj["faults"] = [{"at": at, "kind": "kill", "target": obj["workers"][0]["id"]}]
    rc = main(["testbed", "--topology", _write(tmp_path, obj), "--policies", "cf", "--rates",
               "5", "--duration", "3", "--no-plots", "--out", str(tmp_path / "tb")])
    err = _err(capsys)
    assert rc == 2 and err == ("edge-agent testbed: error: faults: kill %s at %gs for 0s starts "
                               "after the load ends, at 5.5 s (warm-up 2.5 s + --duration 3 s)"
                               % (obj["workers"][0]["id"], at)), err
    assert not (tmp_path / "tb").exists()


def test_testbed_refuses_topology_rates_over_the_bound_naming_the_field(tmp_path, capsys):
    """Rule: a topology's "rates" over the bound is one line naming the file's rates field."""
    obj = _default()
    obj["rates"] = "1e300"
    path = _write(tmp_path, obj)
    rc = main(["testbed", "--topology", path, "--policies", "cf", "--duration", "1",
               "--no-plots", "--out", str(tmp_path / "tb")])
    assert rc == 2 and "%s: rates:" % path in _err(capsys)


def test_an_out_that_is_a_regular_file_is_one_line_not_a_traceback(tmp_path, capsys):
    """Rule: testbed --out naming an existing regular file is a UsageError naming --out."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="--out: .* is a file, not a folder"):
        new_run_dir(str(f))
    with pytest.raises(UsageError, match="--out: .* cannot be made"):
        new_run_dir(str(f / "below"))
    rc = main(["testbed", "--policies", "cf", "--rates", "1", "--duration", "1", "--no-plots",
               "--out", str(f)])
    assert rc == 2 and "--out" in _err(capsys) and f.read_text() == "x"


def test_fleet_render_refuses_a_non_string_fleet_policy_in_one_line(tmp_path, capsys):
    """Rule: fleet render of a topology whose fleet.policy is no string exits 2 naming it."""
    obj = _default()
    obj["fleet"] = {"policy": 5}
    assert _render(tmp_path, obj) == 2 and "fleet.policy" in _err(capsys)


@pytest.mark.parametrize("zone,ok", [("eth0", True), ("3", True), ("wlan0.100", True),
                                     ("`id`;echo", False), ("a b", False), ("$(x)", False),
                                     ("x" * 16, False)])
def test_ipv6_zone_ids_must_be_interface_names(zone, ok):
    """Rule: an IPv6 host's zone id is accepted only as an interface name
    ([A-Za-z0-9_.-], at most 15 characters); anything else is a host problem."""
    problem = host_problem("fe80::1%" + zone)
    if ok:
        assert problem == ""  # on Python 3.8 too (its ipaddress takes no zone id)
    else:
        assert problem


def _rec(**kw):
    rec = {"id": "cam1-0", "source": "cam1", "status": "completed", "created_mono": 1.0,
           "finished_mono": 1.5, "resends": 0}
    rec.update(kw)
    return rec


@pytest.mark.parametrize("field,value", [
    ("finished_mono", float("nan")), ("finished_mono", float("inf")),
    ("created_mono", float("-inf")), ("delay_s", float("nan")),
    pytest.param("created_mono", 10 ** 400, id="created_mono-400-digits"),
    ("resends", float("inf")), ("resends", "many"), ("status", "exploded"), ("status", None)])
def test_records_with_non_finite_times_or_unknown_status_are_damaged_lines(tmp_path, field,
                                                                           value):
    """Rule: a record with a non-finite time or resends, or an unknown status, is no task
    record: read_records skips it and lists its line as damaged."""
    assert is_record(_rec()) and not is_record(_rec(**{field: value}))
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(_rec()) + "\n" + json.dumps(_rec(**{field: value})) + "\n")
    bad: list = []
    assert len(read_records(str(path), bad)) == 1 and bad == [2]


def test_report_json_of_a_run_with_a_nan_time_is_valid_json(tmp_path, capsys):
    """Rule: report --json never writes NaN or Infinity: the NaN record is a damaged line
    (a warning), the rest is reported."""
    run = tmp_path / "20260101-000000"
    d = run / "cf" / "rate-1"
    for src in ("cam1", "cam2"):
        (d / src).mkdir(parents=True)
        recs = [_rec(id="%s-%d" % (src, i), source=src, created_mono=1.0 + i,
                     finished_mono=1.5 + i) for i in range(4)]
        if src == "cam1":
            recs.append(_rec(id="cam1-9", finished_mono=float("nan")))
        (d / src / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "run.json").write_text(json.dumps({
        "kind": "local", "policy": "cf", "rate": 1.0,
        "records": {"cam1": "cam1/records.jsonl", "cam2": "cam2/records.jsonl"},
        "expected": {"cam1": 5, "cam2": 4}, "stats": {}, "duration_s": 4.0, "load_s": 4.0}))
    (run / "testbed.json").write_text(json.dumps({
        "topology": "default", "mdi_mode": None, "policies": ["cf"], "rates": [1.0],
        "duration_s": 4.0, "seed": 1, "network": "loopback", "faults": []}))
    out = tmp_path / "r.json"
    main(["report", str(run), "--json", str(out)])
    err = capsys.readouterr().err
    assert "line 5 is not a task record" in err and "Traceback" not in err
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail("non-JSON " + c))


def test_plan_rounds_and_staleness_are_capped(tmp_path, capsys):
    """Rule: plan --rounds (or --staleness) above MAX_ROUNDS, or below 1 (0), exits 2 in one
    line whatever the policy (a negative --staleness passed for every policy but ga)."""
    from agent.commands.plan import MAX_ROUNDS

    for opt, least in (("--rounds", 1), ("--staleness", 0)):
        for policy in ("ga", "dtoee"):
            for bad in (MAX_ROUNDS + 1, least - 1):
                rc = main(["plan", "-s", "no-such.json", "-p", policy, opt, str(bad)])
                assert rc == 2 and _err(capsys) == (
                    "edge-agent plan: error: %s: must be in %d..%d, got %d"
                    % (opt, least, MAX_ROUNDS, bad))
