"""Saved state is input: poisoned files are dropped with a warning; failed saves never stop
the agent; key and file checks never block and say what is wrong."""

from __future__ import annotations

import json
import logging
import os

import pytest

from agent.net.security import SecurityError, load_public_key
from agent.node.hooks import NodeHooks
from agent.ops.files import FileFault, WriteFaults, read_bounded
from agent.ops.state import StateStore, check_state


def _save_raw(tmp_path, text):
    (tmp_path / "state.json").write_text(text)
    return StateStore(str(tmp_path))


@pytest.mark.parametrize("state, why", [
    ('{"policy": "dtoee", "routing": {"w2a": Infinity, "w2b": 0.0}}', "non-finite"),
    ('{"policy": "dtoee", "routing": {"w2a": NaN}}', "non-finite"),
    ('{"policy": "dtoee", "routing": {"w2a": 0.7, "w2b": 0.7}}', "sums to"),
    ('{"policy": "dtoee", "routing": {"w2a": -0.5, "w2b": 1.5}}', "outside [0, 1]"),
    ('{"policy": "dtoee", "routing": {"w2a": "1"}}', "not a table of probabilities"),
    ('{"policy": "dtoee", "thresholds": {"1": 1.5}}', "threshold"),
    ('{"policy": "mdi-exit", "mdi_threshold": 0}', "threshold"),
    ('{"policy": "x", "interarrival_s": 1e400}', "interarrival_s is inf"),
])
def test_poisoned_saved_state_is_dropped_with_a_warning(tmp_path, caplog, state, why):
    """Rule: restored state is validated like input (finite, in range, routing rows summing to
    1); a file that fails is moved aside with a warning and the agent starts fresh."""
    store = _save_raw(tmp_path, '{"format_version": 1, "saved_unix_s": 1, "state": %s}' % state)
    with caplog.at_level(logging.WARNING):
        assert store.load() is None
    assert why in caplog.text
    assert os.path.exists(store.path + ".corrupt") and not os.path.exists(store.path)


def test_valid_state_round_trips(tmp_path):
    """Rule: a state that passes the checks is restored as saved."""
    state = {"policy": "dtoee", "routing": {"w2a": 0.25, "w2b": 0.75},
             "thresholds": {"1": 0.8}, "dtoee_thresholds": {"1": 0.8}, "thresholds_version": 3}
    store = StateStore(str(tmp_path))
    store.save(state)
    assert store.load() == state
    check_state(state)


def test_a_fifo_in_place_of_state_json_is_not_read(tmp_path, caplog):
    """Rule: loading never blocks: a FIFO at state.json is refused (warning), not opened."""
    os.mkfifo(str(tmp_path / "state.json"))
    with caplog.at_level(logging.WARNING):
        assert StateStore(str(tmp_path)).load() is None
    assert "FIFO" in caplog.text


class _FailingStore:
    path = "/full/state.json"

    def __init__(self):
        self.fail = True

    def save(self, state, force=False):
        if self.fail:
            raise OSError(28, "No space left on device")


def test_failed_state_saves_are_counted_and_logged_at_most_once_a_minute(caplog):
    """Rule: a state save that fails (ENOSPC) raises nothing, counts ``state_save_failed`` every
    time, logs once per minute, and says once that saving works again."""
    now = [0.0]
    counts = []
    store = _FailingStore()
    hooks = NodeHooks(state_store=store, clock=lambda: now[0])
    hooks.count = counts.append
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            now[0] = i * 5.0
            hooks.save_state({"policy": "x"})
        now[0] = 61.0
        hooks.save_state({"policy": "x"})
        store.fail = False
        hooks.save_state({"policy": "x"})
    assert counts == ["state_save_failed"] * 11
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot write state" in m for m in lines) == 2
    assert sum("works again" in m for m in lines) == 1


def test_write_faults_report_the_first_failure_at_once():
    """Rule: the first failure is logged at once and counted through ``on_count``."""
    seen = []
    faults = WriteFaults("records", on_count=lambda what, n: seen.append((what, n)))
    faults.failed(OSError(28, "No space left on device"))
    assert faults.failures == 1 and faults.failing and seen == [("records", 1)]


def test_a_39_character_key_is_reported_as_a_mistyped_key(tmp_path):
    """Rule: a key one character short says so (not "No such file")."""
    with pytest.raises(SecurityError, match="39 characters long.*exactly 40"):
        load_public_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf", str(tmp_path))


def test_bounded_reads_refuse_fifos_devices_and_oversized_files(tmp_path):
    """Rule: key and config reads never block and never read more than their bound."""
    fifo = str(tmp_path / "k.key")
    os.mkfifo(fifo)
    with pytest.raises(FileFault, match="FIFO"):
        read_bounded(fifo, "key file", 100)
    with pytest.raises(FileFault, match="character device"):
        read_bounded("/dev/zero", "key file", 100)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FileFault, match="101 bytes"):
        read_bounded(str(big), "key file", 100)
    assert read_bounded(str(big), "key file", 101) == b"x" * 101
    assert json.loads(json.dumps("ok")) == "ok"


def test_an_unchanged_state_is_not_written_again(tmp_path):
    """Rule: a save equal to the last one written leaves the file alone (an idle agent saved it,
    with two fsyncs, every slot); a changed state, or a file removed meanwhile, is written."""
    from agent.ops.state import StateStore
    store = StateStore(str(tmp_path))
    assert store.save({"routing": {"w1": 1.0}}) is True
    before = os.stat(store.path).st_mtime_ns, os.stat(store.path).st_ino
    assert store.save({"routing": {"w1": 1.0}}) is False and store.skipped == 1
    assert (os.stat(store.path).st_mtime_ns, os.stat(store.path).st_ino) == before
    assert store.save({"routing": {"w1": 0.5, "w2": 0.5}}) is True
    os.remove(store.path)
    assert store.save({"routing": {"w1": 0.5, "w2": 0.5}}) is True
    assert store.load() == {"routing": {"w1": 0.5, "w2": 0.5}}


def test_a_state_differing_only_in_its_counts_is_not_written_until_a_stop(tmp_path):
    """Rule: DTO-EE counts its settled phases every slot (``dtoee_phases``, a COUNTER_KEYS
    entry); a state that differs only there is not written (an idle agent fsynced every
    slot), and ``force`` (the agent's stop) writes the counts."""
    from agent.ops.state import StateStore
    store = StateStore(str(tmp_path))
    assert store.save({"routing": {"w1": 1.0}, "dtoee_phases": {"settled": 1}})
    assert not store.save({"routing": {"w1": 1.0}, "dtoee_phases": {"settled": 2}})
    assert store.load()["dtoee_phases"] == {"settled": 1}
    assert store.save({"routing": {"w1": 1.0}, "dtoee_phases": {"settled": 3}}, force=True)
    assert store.load()["dtoee_phases"] == {"settled": 3}
