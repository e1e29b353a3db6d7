"""A bad command-line value is refused in one line naming the option that is wrong and the
value given, not a list of every option it might be: ``heads`` --grid, --hidden,
--weight-decay; ``status`` --watch and --timeout (finite, at most a day, checked before the
fleet is read)."""

from __future__ import annotations

import pytest

from agent.cli import main

HEADS = ["heads", "--onnx", "m.onnx", "--at", "a", "--data", "d.npz", "--out", "h.onnx"]


def _error(capsys, argv):
    """``edge-agent ARGV``'s exit status and its one stderr line (no traceback)."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return rc, lines[0]


@pytest.mark.parametrize("opt,value,what", [
    ("--grid", "0", "a whole number >= 1, got 0"),
    ("--hidden", "-3", "a whole number >= 1, got -3"),
    ("--weight-decay", "-1", "a finite number >= 0, got -1"),
    ("--weight-decay", "inf", "a finite number >= 0, got inf"),
])
def test_heads_names_the_option_and_the_value_that_are_wrong(tmp_path, monkeypatch, capsys,
                                                              opt, value, what):
    """Rule: heads refuses a bad --grid, --hidden or --weight-decay with exit 2 and
    "OPTION: must be ..., got VALUE", before any file is read (none exists here); no other
    option is named."""
    monkeypatch.chdir(tmp_path)
    rc, line = _error(capsys, HEADS + [opt, value])
    assert rc == 2 and line == "edge-agent heads: error: %s: must be %s" % (opt, what), line
    others = {"--grid", "--hidden", "--threads", "--weight-decay"} - {opt}
    assert not any(o in line for o in others), line


@pytest.mark.parametrize("args,line", [
    (["--watch", "-1"], "--watch: must be in [0, 86400] seconds, got -1"),
    (["--watch", "nan"], "--watch: must be in [0, 86400] seconds, got nan"),
    (["--watch", "inf"], "--watch: must be in [0, 86400] seconds, got inf"),
    (["--timeout", "0"], "--timeout: must be in (0, 86400] seconds, got 0"),
    (["--timeout", "1e9"], "--timeout: must be in (0, 86400] seconds, got 1e+09"),
    (["--watch", "-1", "--timeout", "0"], "--watch: must be in [0, 86400] seconds, got -1"),
])
def test_status_names_the_one_option_that_is_wrong(tmp_path, capsys, args, line):
    """Rule: status refuses a --watch outside [0, a day] or a --timeout outside (0, a day]
    (nan and inf too: sleeping inf seconds fails) with exit 2 in one line naming that option
    and its value (the first wrong one when both are), before the --fleet folder is read (it
    does not exist here)."""
    rc, got = _error(capsys, ["status", "--fleet", str(tmp_path / "none")] + args)
    assert rc == 2 and got == "edge-agent status: error: " + line, got
