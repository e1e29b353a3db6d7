"""StateStore: atomic save (temp + fsync + rename), load returns the last complete state."""

import json
import os

from agent.ops.state import DEFAULT_STATE_DIR, StateStore, default_state_dir


def test_a_saved_state_loads_back_and_a_new_save_replaces_it_leaving_no_temp_files(tmp_path):
    store = StateStore(str(tmp_path / "state"))
    assert store.load() is None
    store.save({"slot": 1, "routing": {"w1": 0.25, "w2": 0.75}, "thresholds": {"1": 0.8}})
    store.save({"slot": 2, "routing": {"w1": 0.5, "w2": 0.5}, "thresholds": {"1": 0.9}})
    assert store.load() == {"slot": 2, "routing": {"w1": 0.5, "w2": 0.5},
                            "thresholds": {"1": 0.9}}
    # no temporary files left behind
    assert os.listdir(store.directory) == ["state.json"]


def test_torn_temp_file_from_a_crash_does_not_replace_the_state(tmp_path):
    """A crash between write and rename leaves the previous state readable."""
    store = StateStore(str(tmp_path))
    store.save({"slot": 7})
    with open(os.path.join(store.directory, ".state.json.0123456789abcdef.tmp"), "w") as f:
        f.write('{"format_version": 1, "state": {"slot": 8')
    assert store.load() == {"slot": 7}


def test_state_file_is_readable_by_its_owner_only(tmp_path):
    """The saved state is 0600 whatever the umask, and stays so across saves."""
    store = StateStore(str(tmp_path))
    old = os.umask(0)
    try:
        store.save({"slot": 1})
        store.save({"slot": 2})
    finally:
        os.umask(old)
    assert os.stat(store.path).st_mode & 0o777 == 0o600


def test_corrupt_file_is_moved_aside_and_load_returns_none(tmp_path, caplog):
    store = StateStore(str(tmp_path))
    with open(store.path, "w") as f:
        f.write("{not json")
    assert store.load() is None
    assert os.path.exists(store.path + ".corrupt")
    assert "unusable" in caplog.text


def test_other_format_version_is_not_used(tmp_path):
    store = StateStore(str(tmp_path))
    with open(store.path, "w") as f:
        json.dump({"format_version": 999, "state": {"slot": 1}}, f)
    assert store.load() is None


def test_nan_is_refused_at_save_time(tmp_path):
    """NaN is not JSON; refusing it at save keeps the stored file loadable everywhere."""
    store = StateStore(str(tmp_path))
    try:
        store.save({"capacity_flops": float("nan")})
    except ValueError:
        pass
    else:
        raise AssertionError("NaN accepted")
    assert store.load() is None


def test_the_default_state_dir_is_systemds_state_directory_else_var_lib():
    """Rule: one default for every command run without a state directory (calibrate, doctor,
    install's service user home, fleet render): systemd's $STATE_DIRECTORY (its first entry
    when the unit lists several), else /var/lib/edge-agent."""
    assert default_state_dir({}) == DEFAULT_STATE_DIR == "/var/lib/edge-agent"
    assert default_state_dir({"STATE_DIRECTORY": ""}) == DEFAULT_STATE_DIR
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}) == "/var/lib/a"
