"""`doctor --config` with a path that names no file says the path is wrong, not that a file
needs fixing."""

from agent.ops.doctor import FAIL
from agent.ops.doctor_node import CONFIG_FIX, check_node


def test_a_config_path_naming_no_file_fails_with_a_path_fix(tmp_path):
    """One FAIL line, `PATH: no such file`, whose fix asks for the right path (the fix for a
    malformed file would send the user to edit a file that is not there)."""
    path = str(tmp_path / "nosuch.toml")
    checks, cfg = check_node(path)
    assert cfg is None and len(checks) == 1
    (check,) = checks
    assert (check.name, check.status, check.detail) == ("node config", FAIL,
                                                        "%s: no such file" % path)
    assert check.fix != CONFIG_FIX and "path" in check.fix


def test_a_malformed_config_keeps_the_fix_the_file_advice(tmp_path):
    """A file that is there but does not parse is still one to fix."""
    path = tmp_path / "bad.toml"
    path.write_text("node_id = \n")
    checks, cfg = check_node(str(path))
    assert cfg is None and [c.status for c in checks] == [FAIL]
    assert checks[0].fix.startswith(CONFIG_FIX.split(",")[0])
