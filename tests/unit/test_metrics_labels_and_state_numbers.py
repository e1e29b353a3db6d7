"""Input the operations layer cannot choose: a logged warning naming a file whose name is not
UTF-8 must not take the metrics page down, and a saved state holding an integer too large for
a float must be set aside like any other unusable state, not stop the agent's start."""

import json
import logging
import os
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from agent.ops.metrics import AgentMetrics
from agent.ops.state import StateStore, check_state


def _serve(m):
    """Serve ``m`` on a free loopback port; the port."""
    return m.serve("127.0.0.1", 0)


def _scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode("utf-8"))}


def test_a_warning_naming_a_non_utf8_file_keeps_the_metrics_page_scrapable():
    """A log line with a lone surrogate (os.fsdecode of a Latin-1 file name) is shown with "?"
    in its place, and every other series is still served."""
    m = AgentMetrics('w"1\\é')
    port = _serve(m)
    log = logging.getLogger("metrics_labels_test")
    log.propagate = False  # pytest's log capture, sent between test processes, takes no surrogate
    try:
        m.capture_warnings(log)
        m.routing("w2", 0.25)
        log.warning("cannot open %s", os.fsdecode(b"/data/caf\xe9.onnx"))
        families = _scrape(port)
    finally:
        log.propagate = True
        m.close()
    (warning,) = families["edge_agent_last_warning_timestamp_seconds"].samples
    assert warning.labels["message"] == "cannot open /data/caf?.onnx"
    assert warning.labels["node"] == 'w"1\\é'
    (routing,) = families["edge_agent_routing_probability"].samples
    assert (routing.labels["dst"], routing.value) == ("w2", 0.25)


def test_a_long_multiline_warning_is_one_line_cut_to_the_label_limit():
    """The newest warning's label is one line of at most WARNING_LABEL_CHARS characters."""
    from agent.ops.metrics import WARNING_LABEL_CHARS

    m = AgentMetrics("w1")
    port = _serve(m)
    try:
        m.last_warning("ERROR", "x" * 1000 + '\n"quoted"\tand\\more', 5.0)
        (warning,) = _scrape(port)["edge_agent_last_warning_timestamp_seconds"].samples
    finally:
        m.close()
    text = warning.labels["message"]
    assert len(text) == WARNING_LABEL_CHARS and text.endswith("...") and "\n" not in text
    assert warning.value == 5.0


def test_a_saved_integer_beyond_a_floats_range_sets_the_state_aside(tmp_path, caplog):
    """state.json with a 400-digit integer is unusable: ``load`` returns None, keeps the file
    as state.json.corrupt and names the entry, instead of raising OverflowError."""
    path = tmp_path / "state.json"
    path.write_text('{"format_version": 1, "saved_unix_s": 1, "state": {"policy": "dtoee", '
                    '"dtoee_phases": {"1": 1%s}}}' % ("0" * 400))
    store = StateStore(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="agent.ops.state"):
        assert store.load() is None
    assert not path.exists() and (tmp_path / "state.json.corrupt").exists()
    assert "state.dtoee_phases.1" in caplog.text


def test_large_but_float_sized_integers_still_pass_the_state_check():
    """Counts up to a float's range (a DIMEE count of 2**63) are valid saved state."""
    state = {"policy": "dimee", "dimee_pools": {"count": [2 ** 63, 0]}, "thresholds": {"1": 1}}
    check_state(json.loads(json.dumps(state)))
