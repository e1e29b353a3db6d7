"""The paper settings generator: Section 4.1's shape and Table 2's numbers, seeded."""

import numpy as np
import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.policies.model import accuracy_range
from agent.scenario.format import load_scenario
from agent.scenario.paper import DEVICE_MODES, PAPER_MODELS, paper_scenario
from engines.exit_profile import exit_stats


@pytest.fixture(scope="module", params=sorted(PAPER_MODELS))
def setting(request):
    return request.param, paper_scenario(request.param, seed=0)


def test_exit_profile_matches_table2_accuracies_and_is_labelled_synthetic(setting):
    """Each head's accuracy on the synthetic profile equals Table 2's; A_min is the first
    exit's, A_max the final head's; profile and scenario say synthetic."""
    name, sc = setting
    accs = [a for a in PAPER_MODELS[name]["accuracy"] if a is not None]
    prof = sc.exit_profile
    assert np.allclose(prof.correct.mean(axis=0), accs, atol=1e-4)
    assert accuracy_range(prof) == pytest.approx((accs[0], accs[-1]), abs=1e-4)
    assert prof.synthetic and "synthetic" in prof.note
    assert sc.synthetic and "Synthetic" in sc.comment


def test_confidence_orders_correctness(setting):
    """Higher thresholds keep more tasks and never lower accuracy, as with real exit heads."""
    _, sc = setting
    k = len(sc.exit_profile.early_exit_stages)
    stats = [exit_stats(sc.exit_profile, [c] * k) for c in (0.3, 0.6, 0.9)]
    assert stats[0].accuracy < stats[1].accuracy <= stats[2].accuracy
    assert all((a.remaining <= b.remaining + 1e-12).all() for a, b in zip(stats, stats[1:]))


def test_shape_of_section_4_1(setting):
    """50 sources, 4-6 workers per stage (non-increasing), 2-4 receivers per offloader, every
    worker reachable, Table 2 FLOPs/bytes, link rates 1-10 MB/s from sources and 10-20 MB/s
    between workers, capacities within the 5x Jetson power-mode spread."""
    name, sc = setting
    spec = PAPER_MODELS[name]
    assert len(sc.sources) == 50
    counts = [len(sc.workers_of_stage(h)) for h in range(1, sc.num_stages + 1)]
    assert all(4 <= c <= 6 for c in counts) and counts == sorted(counts, reverse=True)
    assert [s.flops for s in sc.stages] == pytest.approx([g * 1e9 for g in spec["gflops"]])
    assert [s.input_bytes for s in sc.stages] == pytest.approx([b * 1e6 for b in spec["mbytes"]])
    for node in [s.id for s in sc.sources] + [w.id for w in sc.workers]:
        if sc.stage_of(node) < sc.num_stages:
            assert 2 <= len(sc.successors(node)) <= 4
    assert all(sc.predecessors(w.id) for w in sc.workers)
    for l in sc.links:
        lo, hi = (1e6, 1e7) if sc.stage_of(l.src) == 0 else (1e7, 2e7)
        assert lo <= l.rate <= hi
    caps = [w.capacity for w in sc.workers]
    assert max(caps) / min(caps) <= 5.0 + 1e-9
    for w in sc.workers:
        assert w.capacity in [c for _, c in w.power_modes]
        assert len(w.power_modes) == 3


def test_busiest_stage_runs_at_the_requested_load():
    """Capacities are scaled so the busiest stage is at `load` at the reference thresholds."""
    sc = paper_scenario("paper-resnet101", seed=2, load=0.5, reference_threshold=0.8)
    rem = exit_stats(sc.exit_profile, [0.8, 0.8]).remaining
    entering = 50 * 4.8 * np.concatenate(([1.0], np.cumprod(rem)[:-1]))
    util = [entering[h - 1] * sc.stages[h - 1].flops
            / sum(w.capacity for w in sc.workers_of_stage(h)) for h in range(1, 5)]
    assert max(util) == pytest.approx(0.5)


def test_rate_changes_the_load_not_the_capacities():
    """``rate`` sets what the sources offer; the capacities stay sized at the paper's rate, so
    twice the rate is twice the load (it used to rescale the capacities with it)."""
    base = paper_scenario("paper-resnet101", seed=2, num_samples=200)
    double = paper_scenario("paper-resnet101", seed=2, num_samples=200, rate=9.6)
    assert [w.capacity for w in double.workers] == [w.capacity for w in base.workers]
    assert {s.rate for s in base.sources} == {4.8} and {s.rate for s in double.sources} == {9.6}
    assert "at 4.8 tasks/s per source" in double.comment and "offer 9.6 tasks/s" in double.comment


def test_seeded():
    """Same seed, same scenario; another seed, another topology."""
    a, b = paper_scenario("paper-bert", seed=4), paper_scenario("paper-bert", seed=4)
    c = paper_scenario("paper-bert", seed=5)
    assert a.links == b.links and a.workers == b.workers
    assert np.array_equal(a.exit_profile.confidence, b.exit_profile.confidence)
    assert a.links != c.links


def test_device_modes_span_five_times():
    """The fastest mode (AGX MAXN) is 5x the slowest (TX2 MAXQ), as in the paper."""
    speeds = [s for modes in DEVICE_MODES.values() for _, s in modes]
    assert max(speeds) / min(speeds) == pytest.approx(5.0)


def test_scenario_command_writes_a_loadable_file(tmp_path, capsys):
    """`edge-agent scenario paper-bert -o F` writes F and its profile; both load."""
    out = tmp_path / "bert.json"
    assert main(["scenario", "paper-bert", "-o", str(out), "--samples", "500",
                 "--rate", "2.4"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(tmp_path / "bert.exit_profile.npz")]
    sc = load_scenario(str(out))
    assert sc.exit_profile.num_samples == 500 and sc.sources[0].rate == 2.4


def test_bad_generator_values_are_usage_errors(capsys):
    """A bad --load or setting is a one-line usage error."""
    with pytest.raises(UsageError, match="load"):
        paper_scenario("paper-bert", load=1.2)
    with pytest.raises(UsageError, match="unknown setting"):
        paper_scenario("paper-vgg")
    assert main(["scenario", "paper-bert", "--tradeoff", "2"]) == 2
    assert "--tradeoff" in capsys.readouterr().err


def test_homogeneous_setting_of_the_threshold_study():
    """--homogeneous: equal worker counts, one capacity, one link rate per hop kind."""
    sc = paper_scenario("paper-bert", seed=1, homogeneous=True)
    assert [len(sc.workers_of_stage(h)) for h in range(1, 6)] == [5] * 5
    assert len({w.capacity for w in sc.workers}) == 1
    assert {l.rate for l in sc.links} == {5.5e6, 1.5e7}
    assert "4.4" in sc.comment
