"""`edge-agent simulate`: sweeps, JSON results and small plots; bad options are usage errors."""

import json

from agent.cli import main
from agent.scenario.format import save_scenario
from agent.scenario.paper import paper_scenario


def _scenario(tmp_path):
    sc = paper_scenario("paper-bert", seed=3, num_sources=6, num_samples=400)
    return save_scenario(str(tmp_path / "bert.json"), sc)[0]


def test_simulate_writes_results_and_small_plots(tmp_path, capsys):
    """Rate and capacity sweeps, dynamic slots and the threshold study land in results.json;
    every plot is a PNG under 200 KB; per-task records are written on request."""
    path = _scenario(tmp_path)
    out = tmp_path / "out"
    rc = main(["simulate", "--scenario", path, "--policies", "dtoee,dtoee-c0.7",
               "--rates", "1.5,2.5", "--scales", "0.8,1.2", "--dynamic-slots", "2",
               "--threshold-study", "--duration", "10", "--warmup", "1", "--rounds", "20",
               "--records", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["rate"], r["policy"]) for r in res["rates"]] == [
        (1.5, "dtoee"), (1.5, "dtoee-c0.7"), (2.5, "dtoee"), (2.5, "dtoee-c0.7")]
    for r in res["rates"] + res["capacity"]:
        assert r["completed"] == r["tasks"] > 0 and 0.4 < r["accuracy"] < 0.7
        assert r["mean_delay_s"] > 0
    assert len(res["dynamic"]["dtoee"]) == 2 and set(res["thresholds"]) == {
        "dtoee", "dtoee-c0.7", "dtoee-c1.0"}
    assert all(s["thresholds"] == {"2": 0.7, "3": 0.7, "4": 0.7}
               for s in res["thresholds"]["dtoee-c0.7"])
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["bert_dynamic.png", "bert_thresholds.png", "bert_vs_capacity.png",
                    "bert_vs_rate.png"]
    assert all(p.stat().st_size < 200_000 for p in out.glob("*.png"))
    assert len(list((out / "records").glob("*.npz"))) == 4
    assert "dtoee-c0.7" in capsys.readouterr().out


def test_unknown_policy_is_a_one_line_usage_error(tmp_path, capsys):
    """An unknown policy name fails before any simulation, naming the option."""
    path = _scenario(tmp_path)
    assert main(["simulate", "--scenario", path, "--policies", "dtoee,magic",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--policies" in err[0] and "magic" in err[0]
    assert main(["simulate", "--scenario", path, "--policies", "dtoee", "--warmup", "50",
                 "--duration", "10",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--warmup" in capsys.readouterr().err


def test_the_scenarios_rounds_and_link_model_knobs_apply_unless_an_option_overrides(tmp_path):
    """Rule: ``simulate`` takes DTO-EE's rounds per phase from ``--rounds``, else from the
    scenario's ``rounds`` knob, else 50; and its link model from ``--link-model``, else from
    the scenario's ``link_model`` knob (simulated and planned with alike), else delay."""
    import dataclasses

    sc = paper_scenario("paper-bert", seed=3, num_sources=6, num_samples=400)
    path = save_scenario(str(tmp_path / "k.json"), dataclasses.replace(
        sc, knobs=dict(sc.knobs, rounds=3, link_model="shared")))[0]

    def run(*extra):
        out = tmp_path / ("o%d" % len(list(tmp_path.iterdir())))
        assert main(["simulate", "--scenario", path, "--policies", "dtoee", "--rates", "1.5",
                     "--duration", "4", "--warmup", "1", "--no-plots", "--out", str(out)]
                    + list(extra)) == 0
        return json.loads((out / "results.json").read_text())

    knobs = run()
    assert knobs["rates"][0]["rounds"] == 3
    assert run("--rounds", "2")["rates"][0]["rounds"] == 2
    # the same arrivals and samples: the knob's "shared" is what is simulated, not "delay"
    delay = knobs["rates"][0]["mean_delay_s"]
    assert run("--link-model", "shared")["rates"][0]["mean_delay_s"] == delay
    assert run("--link-model", "delay")["rates"][0]["mean_delay_s"] != delay
