"""One TOML reader (``agent.config.jsonfile.toml_loads``: ``tomllib``, or ``tomli`` before
Python 3.11) for the node configs the agent loads and for the scan of running agents that
``calibrate`` makes, which reads each config's ``state_dir`` as the agent does."""

from __future__ import annotations

import os
import pwd

import pytest

from agent.config.jsonfile import load_toml, toml_loads
from agent.config.node import dump_config, load_config
from agent.ops.running import _state_dir_of
from agent.testbed.local import node_configs
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.import_graph import find_modules, import_statements


def test_only_the_config_reader_imports_a_toml_library():
    """Rule: no module but agent.config.jsonfile imports tomllib or tomli; the others read
    TOML through it."""
    users = {name for name, mod in find_modules().items() for stmt in import_statements(mod)
             if stmt.name.split(".")[0] in ("tomllib", "tomli")}
    assert users == {"agent.config.jsonfile"}


def _config_file(tmp_path, state_dir):
    """A real node config file as the testbed writes one, its ``state_dir`` set as given."""
    topo = parse_topology({"sources": [{"id": "s1", "share": 1.0}],
                           "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
                           "links": [{"from": "s1", "to": "w1"}]})
    cfg = node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, "fixed", 1.0, 1.0,
                       str(tmp_path / "run"))["w1"]
    lines = [ln for ln in dump_config(cfg).splitlines() if not ln.startswith("state_dir =")]
    path = tmp_path / "etc" / "w1.toml"
    path.parent.mkdir()
    path.write_text('state_dir = "%s"\n' % state_dir + "\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("state_dir", ["state/w1", "../var/w1", "~/w1-state"])
def test_the_running_agents_scan_reads_state_dir_as_the_agent_does(tmp_path, monkeypatch,
                                                                    state_dir):
    """Rule: a config's state_dir, relative (to the config's folder) or under ``~`` (the
    agent's user's home), is the same folder for the agent and for calibrate's scan."""
    home = pwd.getpwuid(os.getuid()).pw_dir
    monkeypatch.setenv("HOME", home)  # the agent's HOME under systemd: its user's home
    path = _config_file(tmp_path, state_dir)
    agent = load_config(path).state_dir
    assert os.path.normpath(_state_dir_of(path, os.getuid())) == agent
    if state_dir.startswith("~"):
        assert agent == os.path.join(home, "w1-state")


def test_a_config_that_is_not_toml_is_no_state_dir_to_the_scan(tmp_path):
    """Rule: the scan skips (reads as "") a config its TOML reader refuses, which the agent
    refuses too."""
    bad = tmp_path / "bad.toml"
    bad.write_text('state_dir = "x"\nstate_dir = "y"\n')  # a key given twice
    assert _state_dir_of(str(bad)) == ""
    with pytest.raises(ValueError):
        toml_loads(bad.read_text())


def test_load_toml_refuses_a_number_no_float_holds_through_the_one_reader():
    """Rule: ``load_toml`` (node configs) decodes with ``toml_loads`` and refuses 1e-400,
    which the reader alone would take as 0.0, naming the field."""
    assert toml_loads("a = 1e-400\n") == {"a": 0.0}
    with pytest.raises(RuntimeError) as exc:
        load_toml("[x]\na = 1e-400\n", RuntimeError, "config")
    assert str(exc.value).startswith("config.x.a: ")
