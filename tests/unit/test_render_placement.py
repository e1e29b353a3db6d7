"""``fleet render`` makes the placement check ``run`` and ``doctor`` make of every worker
config before writing anything: a policy that models one stage per worker (DTO-EE, the
default) with a worker holding several stages (``mdi-local``: one node, stages 1-4) is one
error line naming the workers and ``--policy``; the topology's own ``fleet.policy`` is the
default when it names one."""

from __future__ import annotations

import json

import dataclasses

import pytest

from agent.cli import main
from agent.config.node import load_config
from agent.errors import UsageError
from agent.node.build import check_config
from agent.testbed.driver import load_bundle_for
from agent.testbed.topology import load_topology


def _inventory(tmp_path):
    inv = tmp_path / "hosts.txt"
    inv.write_text("cam 10.0.0.10\nn1 10.0.0.11\n", encoding="utf-8")
    return str(inv)


def _render(tmp_path, topology, *extra):
    return main(["fleet", "render", "--topology", topology, "--inventory", _inventory(tmp_path),
                 "--out", str(tmp_path / "out"), "--root", str(tmp_path / "root")] + list(extra))


def test_a_one_stage_policy_with_a_multi_stage_worker_is_refused_before_anything_is_written(
        tmp_path, capsys):
    """Rule: `fleet render --topology mdi-local` without --policy (DTO-EE) exits 2 with one
    line naming worker n1, its stages, why, and --policy; --out is not made. With --policy
    dtoee the line names --policy; with --policy mdi-exit the render succeeds."""
    assert _render(tmp_path, "mdi-local") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-agent fleet render: error: policy dtoee (the default without --policy) "
                   "cannot run worker n1 (stages 1-4): DTO-EE models one stage per worker, "
                   "and `run` and `doctor` refuse such a config; render with --policy mdi-exit "
                   "(or another policy whose workers may hold several stages)"], err
    assert not (tmp_path / "out").exists()
    assert _render(tmp_path, "mdi-local", "--policy", "dtoee") == 2
    assert capsys.readouterr().err.startswith("edge-agent fleet render: error: --policy dtoee cannot "
                                              "run worker n1 (stages 1-4)")
    assert _render(tmp_path, "mdi-local", "--policy", "mdi-exit") == 0
    assert (tmp_path / "out" / "devices" / "n1" / "etc" / "edge-agent" / "n1.toml").exists()


def test_the_refusal_is_the_one_run_makes_of_the_rendered_config(tmp_path, capsys):
    """Rule: what the render refuses is what `run`'s own check (agent.node.build.check_config)
    refuses: the config rendered with mdi-exit, switched to dtoee, fails it on last_stage,
    while as rendered it passes."""
    assert _render(tmp_path, "mdi-local", "--policy", "mdi-exit") == 0
    cfg = load_config(str(tmp_path / "out" / "devices" / "n1" / "etc" / "edge-agent" /
                          "n1.toml"))
    bundle = load_bundle_for(load_topology("mdi-local"))  # the workstation's copy (demo)
    check_config(cfg, bundle)
    with pytest.raises(UsageError) as got:
        check_config(dataclasses.replace(cfg, policy="dtoee", policy_knobs={}), bundle)
    assert "DTO-EE models one stage per worker" in str(got.value)


def test_the_topologys_fleet_policy_is_the_default_and_named_when_it_cannot_run(tmp_path,
                                                                               capsys):
    """Rule: a topology naming fleet.policy renders with it without --policy (mdi-exit:
    accepted); one naming dtoee for a multi-stage worker is refused naming the topology's
    fleet.policy."""
    obj = json.loads(open(load_topology("mdi-local").file).read())
    for policy, rc in (("mdi-exit", 0), ("dtoee", 2)):
        obj["fleet"] = {"policy": policy}
        path = tmp_path / ("topo-%s.json" % policy)
        path.write_text(json.dumps(obj), encoding="utf-8")
        assert _render(tmp_path, str(path)) == rc
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "edge-agent fleet render: error: the topology's fleet.policy dtoee cannot run worker n1"), err
    drive = json.loads((tmp_path / "out" / "testbed.json").read_text())
    assert drive["fleet"]["policy"] == "mdi-exit"
