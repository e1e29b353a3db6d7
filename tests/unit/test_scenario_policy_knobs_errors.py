"""A policy's own section of a scenario file (``knobs.mdi-exit``, ``knobs.dimee``,
``knobs.mlci``) is checked when the file is read, and every error from it names the file.

An unknown key, a wrong type or a value out of range is one error line
``FILE: knobs.<section>.<key>: ...``, exit status 2, from whichever command reads the file (a
plan with another policy too, as for the DTO-EE knobs); what a section says about the rest of
the scenario (a level's devices, the exit profile's embedding, a tier's devices), found when
the policy plans or simulates, names the file the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.cli import main
from agent.policies.setting import ScenarioError
from agent.scenario.format import load_scenario

SETTINGS = {"mdi-exit": "mdi-local", "dimee": "dimee-demo", "mlci": "mlci-demo"}


def _scenario(tmp_path, section, key, value, name="s.json"):
    """A real scenario file as `edge-agent scenario` writes it, with one knob of ``section``
    set to ``value`` (``key`` None: the section itself)."""
    path = tmp_path / name
    assert main(["scenario", SETTINGS[section], "--out", str(path)]) == 0
    obj = json.loads(path.read_text())
    if key is None:
        obj["knobs"][section] = value
    else:
        obj["knobs"][section][key] = value
    path.write_text(json.dumps(obj))
    return path


CASES = [
    # (section, key, value, what the message says after "FILE: knobs.<section>.")
    ("mdi-exit", "bogus", 1, "bogus: unknown field"),
    ("mdi-exit", "alpha", "x", "alpha: must be a finite number, got 'x'"),
    ("mdi-exit", "alpha", -5, "alpha: must be in (0, 1), got -5"),
    ("mdi-exit", "queue_high", 5, "queue_high: must be >= queue_low"),
    ("mdi-exit", "early_exit", "yes", "early_exit: "),
    ("dimee", "bogus", 1, "bogus: unknown field"),
    ("dimee", "unit", "x", "unit: must be a finite number, got 'x'"),
    ("dimee", "unit", -1, "unit: must be >= 0, got -1"),
    ("dimee", "n", 0, "n: must be >= m (1)"),
    ("dimee", "assign", "nobody", "assign: "),
    ("dimee", "tiers", {"mobile": 3}, "tiers.mobile: must be a device name or a list of them"),
    ("dimee", "tiers", {"space": ["x"]}, "tiers: must be an object with keys among"),
    ("mlci", "bogus", 1, "bogus: unknown field"),
    ("mlci", "k", "x", "k: must be a finite number, got 'x'"),
    ("mlci", "confidence_threshold", 5, "confidence_threshold: must be in (0, 1), got 5"),
    ("mlci", "levels", [["end"], []], "levels: must list levels"),
    ("mlci", "budgets_s", [1, 2], "budgets_s: must list 3 values, one per level"),
    ("mlci", "prune_alpha", 0.5, "prune_alpha: pruning (eq. 10) needs attention weights"),
    # a 400-digit integer has no float: one line, not an OverflowError's traceback
    ("mlci", "budgets_s", [10 ** 400, 0.06, 0.04], "budgets_s: must list numbers > 0"),
    ("mlci", "weights", [1, 10 ** 400, 1], "weights: must list numbers > 0"),
    # a prefix is a stage: 1.5 was read as stage 1, 1e300 as a 301-digit stage
    ("mlci", "prefixes", [1.5, 2, 4], "prefixes: must list whole stage numbers in [1, 1000]"),
    ("mlci", "prefixes", [1, 2, 1e300], "prefixes: must list whole stage numbers in [1, 1000]"),
]


@pytest.mark.parametrize("section,key,value,says", CASES, ids=lambda v: str(v)[:24])
def test_a_bad_knob_of_a_policy_section_is_an_error_naming_the_file(tmp_path, section, key,
                                                                    value, says):
    """Rule: reading a scenario file whose policy section has an unknown key, a wrong type or a
    value out of range raises one line naming the file, the section and the key."""
    path = _scenario(tmp_path, section, key, value)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(str(path))
    msg = str(exc.value)
    assert msg.startswith("%s: knobs.%s.%s" % (path, section, says)), msg
    assert "\n" not in msg


@pytest.mark.parametrize("section", sorted(SETTINGS))
def test_a_policy_section_that_is_no_object_names_the_file(tmp_path, section):
    """Rule: a policy section that is not an object is refused naming the file and section."""
    path = _scenario(tmp_path, section, None, [1, 2])
    with pytest.raises(ScenarioError, match=r"^%s: knobs\.%s: must be an object"
                       % (path, section)):
        load_scenario(str(path))


def test_plan_cli_names_the_file_of_a_bad_mlci_knob_whatever_the_policy(tmp_path):
    """Rule: `edge-agent plan` on a scenario with a bad ``knobs.mlci`` knob prints one error
    line naming the file and the knob, exit 2, for a planner that does not read the section
    too (it printed ``knobs.mlci.k: ...`` without the file, and only for mlci)."""
    path = _scenario(tmp_path, "mlci", "k", -1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for policy in ("mlci", "cf"):
        proc = subprocess.run([sys.executable, "-m", "agent", "plan", "--scenario", str(path),
                               "--policy", policy], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "edge-agent plan: error: %s: knobs.mlci.k: must be > 0, got -1" % path]


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_plan_names_the_file_of_mlci_levels_on_devices_the_scenario_lacks(tmp_path, capsys):
    """Rule: a ``knobs.mlci.levels`` entry naming no device of the scenario, found when MLCI
    plans, is one error line naming the file and the knob, exit 2."""
    path = _scenario(tmp_path, "mlci", "levels", [["end"], ["nope"], ["cloud"]])
    rc, err = _cli(capsys, "plan", "--scenario", path, "--policy", "mlci")
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("edge-agent plan: error: %s: knobs.mlci.levels[1]: no worker on "
                             "device(s) nope" % path)


def test_plan_names_the_file_of_a_dimee_embedding_the_profile_lacks(tmp_path, capsys):
    """Rule: a ``knobs.dimee.embedding`` the scenario's exit profile does not carry is one error
    line naming the file and ``knobs.dimee.embedding`` (the policy says ``dimee.embedding``, as
    on a node)."""
    path = _scenario(tmp_path, "dimee", "embedding", "other")
    rc, err = _cli(capsys, "plan", "--scenario", path, "--policy", "dimee")
    assert rc == 2 and err == ["edge-agent plan: error: %s: knobs.dimee.embedding: 'other', but "
                               "the exit profile's embedding is 'patchnorm4'" % path]


def test_simulate_names_the_file_of_dimee_tiers_missing_a_worker_device(tmp_path, capsys):
    """Rule: `simulate` of DIMEE on a scenario whose ``knobs.dimee.tiers`` leave a worker's
    device out is one error line naming the file and the knob, exit 2."""
    path = _scenario(tmp_path, "dimee", "tiers",
                     {"mobile": ["zzz"], "edge": ["edge"], "cloud": ["cloud"]})
    rc, err = _cli(capsys, "simulate", "--scenario", path, "--policies", "dimee", "--out",
                   tmp_path / "out", "--no-plots", "--duration", 10, "--warmup", 1)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("edge-agent simulate: error: %s: knobs.dimee.tiers: worker "
                             % path)
    assert not (tmp_path / "out").exists()
