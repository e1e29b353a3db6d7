"""A node's drain must fit its unit's TimeoutStopSec: ``doctor --config`` compares
``drain_timeout_s`` (plus the time a stop takes to close) with the stop timeout of
edge-agent@NAME (systemd's, the installed unit files', else the shipped unit's), and says both
numbers and both fixes when it does not fit. Real configs, unit files and the doctor command."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from agent.cli import main
from agent.commands.install import unit_dir
from agent.config.node import load_config
from agent.ops.doctor_check import FAIL, OK, WARN
from agent.ops.stoptime import CLOSE_MARGIN_S, check_stop_time, parse_timespan
from engines.demo import DEMO_BUNDLE_DIR

SHIPPED = os.path.join(unit_dir(), "edge-agent@.service")


def _config(tmp_path, name="w1", drain_timeout_s=None):
    text = ('node_id = "%s"\nrole = "worker"\nstage = 4\nbundle = "%s"\nstate_dir = "%s"\n'
            'security = "none"\ncontrol_bind = "tcp://127.0.0.1:7001"\n'
            'data_bind = "tcp://127.0.0.1:7002"\n' % (name, DEMO_BUNDLE_DIR, tmp_path / "var"))
    if drain_timeout_s is not None:
        text += "drain_timeout_s = %r\n" % drain_timeout_s
    text += ('\n[[peers]]\nid = "s1"\nstage = 0\ncontrol_address = "tcp://127.0.0.1:7003"\n'
             'data_address = "tcp://127.0.0.1:7004"\n')
    path = tmp_path / ("%s.toml" % name)
    path.write_text(text)
    return str(path)


def _installed(root, dropins=()):
    """The shipped unit installed under ``root`` with (path, text) drop-ins."""
    system = root / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    shutil.copy(SHIPPED, system / "edge-agent@.service")
    for rel, text in dropins:
        (system / rel).parent.mkdir(parents=True, exist_ok=True)
        (system / rel).write_text(text)


def test_the_shipped_unit_gives_the_default_drain_its_time():
    """Rule: the shipped unit's TimeoutStopSec holds the default drain_timeout_s and the
    close margin (a default config is never SIGKILLed mid-drain)."""
    from agent.config.node import NodeConfig

    with open(SHIPPED) as f:
        line = next(ln for ln in f.read().splitlines() if ln.startswith("TimeoutStopSec="))
    limit = parse_timespan(line.split("=", 1)[1])
    default = NodeConfig.__dataclass_fields__["drain_timeout_s"].default
    assert default + CLOSE_MARGIN_S <= limit


def test_a_drain_longer_than_the_installed_units_stop_timeout_fails_naming_both_numbers(
        tmp_path):
    """Rule: drain_timeout_s = 60 against the installed unit's TimeoutStopSec = 30s is a FAIL
    naming 60, 30s, SIGKILL and both fixes (drain_timeout_s = 20 or less, or a drop-in with
    TimeoutStopSec = 70s); an instance drop-in giving 90s makes it OK; a template drop-in's
    ``TimeoutSec`` counts too."""
    cfg = load_config(_config(tmp_path, drain_timeout_s=60.0))
    root = tmp_path / "root"
    _installed(root)
    c = check_stop_time(cfg, "w1", str(root))
    assert c.status == FAIL, c
    assert "drain_timeout_s = 60 s" in c.detail and "TimeoutStopSec = 30s" in c.detail
    assert "SIGKILL" in c.detail and "edge-agent@w1" in c.detail
    assert "drain_timeout_s = 20 or less" in c.fix
    assert "systemctl edit edge-agent@w1" in c.fix and "TimeoutStopSec=70s" in c.fix
    _installed(tmp_path / "more", [("edge-agent@w1.service.d/stop.conf",
                                    "[Service]\nTimeoutStopSec=1min 30s\n")])
    c = check_stop_time(cfg, "w1", str(tmp_path / "more"))
    assert c.status == OK and "90s" in c.detail and "stop.conf" in c.detail, c
    _installed(tmp_path / "less", [("edge-agent@.service.d/t.conf", "[Service]\nTimeoutSec=15\n")])
    c = check_stop_time(load_config(_config(tmp_path, "w2")), "w2", str(tmp_path / "less"))
    assert c.status == FAIL and "drain_timeout_s = 5 or less" in c.fix, c


def test_judged_by_the_shipped_unit_only_it_is_a_warning():
    """Rule: with no unit installed the shipped unit's 30s is compared, as a WARN (the
    installed unit may differ); the default drain is OK."""
    class Cfg:
        drain_timeout_s = 60.0
    c = check_stop_time(Cfg, "w1", "/nonexistent-root", SHIPPED)
    assert c.status == WARN and "30s" in c.detail and SHIPPED in c.detail, c
    Cfg.drain_timeout_s = 10.0
    assert check_stop_time(Cfg, "w1", "/nonexistent-root", SHIPPED).status == OK


@pytest.mark.parametrize("text, seconds", [("30s", 30.0), ("90", 90.0), ("1min 30s", 90.0),
                                           ("500ms", 0.5), ("2min", 120.0), ("bogus", None),
                                           ("infinity", float("inf"))])
def test_systemd_time_spans_are_read_as_systemd_reads_them(text, seconds):
    """Rule: TimeoutStopSec values (systemd.time) are read in seconds; one that is not a
    span is None."""
    assert parse_timespan(text) == seconds


def test_doctor_says_when_a_configs_drain_outlasts_the_units_stop_timeout(tmp_path, capsys):
    """Rule: `edge-agent doctor --config NODE.toml` with drain_timeout_s = 60 prints a "node
    stop time" line that is not OK, naming drain_timeout_s = 60 s and TimeoutStopSec (30s
    where the shipped or installed unit is the one compared)."""
    path = _config(tmp_path, drain_timeout_s=60.0)
    main(["doctor", "--json", "--config", path, "--state-dir", str(tmp_path / "var")])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    line = checks.get("node stop time")
    assert line is not None, sorted(checks)
    assert line["status"] in (WARN, FAIL) and "drain_timeout_s = 60 s" in line["detail"]
    assert "TimeoutStopSec" in line["detail"] and "TimeoutStopSec=" in line["fix"]
