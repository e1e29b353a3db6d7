"""Bad scenario input to ``plan`` and ``simulate`` is refused with one line naming the file, the
field and the fix (exit status 2), never a broken table or an empty result with status 0."""

from __future__ import annotations

import json

import pytest

from agent.cli import main

SMALL = {
    "stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": True},
               {"flops": 2e9, "input_bytes": 5e4}],
    "remaining": [0.5, 1.0],
    "sources": [{"id": "s1", "rate": 2.0}],
    "workers": [{"id": "w1", "stage": 1, "capacity": 1e10},
                {"id": "w2", "stage": 2, "capacity": 1e10}],
    "links": [{"from": "s1", "to": "w1", "rate": 1e7}, {"from": "w1", "to": "w2", "rate": 1e7}],
}


def _write(tmp_path, obj) -> str:
    path = tmp_path / "scn.json"
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("node_id", ["cam\n1", "cam\t1", "cam\x001", "cam\x7f1", "cam\x851"])
@pytest.mark.parametrize("which", ["sources", "workers"])
def test_node_id_with_control_character_refused_naming_field(tmp_path, capsys, node_id, which):
    """A node id holding a control character (a newline broke plan's one-line-per-node table)
    is refused, naming the file and ``sources[0].id`` / ``workers[0].id``, status 2."""
    obj = json.loads(json.dumps(SMALL))
    old = obj[which][0]["id"]
    obj[which][0]["id"] = node_id
    for link in obj["links"]:
        for end in ("from", "to"):
            if link[end] == old:
                link[end] = node_id
    path = _write(tmp_path, obj)
    assert main(["plan", "-s", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert "%s: %s[0].id: must not hold control characters" % (path, which) in err


def test_unicode_node_id_still_accepted(tmp_path, capsys):
    """Ids of printable non-ASCII letters stay valid scenario ids (only control characters go)."""
    obj = json.loads(json.dumps(SMALL))
    obj["sources"][0]["id"] = obj["links"][0]["from"] = "cam\u00e9\u4e2d"
    assert main(["plan", "-s", _write(tmp_path, obj)]) == 0
    assert "cam\u00e9\u4e2d" in capsys.readouterr().out


def test_simulate_refuses_scenario_rates_that_give_no_task(tmp_path, capsys):
    """``simulate`` at the scenario's own rates that make no task in the measured window (as
    ``--rates`` already is) is refused before anything runs or is written, naming the file,
    ``sources[].rate`` and the fix; it printed a table of dashes with status 0."""
    obj = json.loads(json.dumps(SMALL))
    obj["sources"][0]["rate"] = 1e-9
    path = _write(tmp_path, obj)
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", path, "--out", str(out), "--no-plots",
                 "--policies", "cf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "%s: sources[].rate: 1e-09 tasks/s over all sources gives no task" % path in err
    assert "--duration" in err
    assert not out.exists()


def test_simulate_scenario_rates_with_tasks_still_run(tmp_path, capsys):
    """A scenario whose rates give tasks in the measured window still runs (status 0)."""
    path = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", path, "--out", str(out), "--no-plots",
                 "--policies", "cf", "--duration", "5", "--warmup", "1"]) == 0
    assert (out / "results.json").exists()
    capsys.readouterr()
