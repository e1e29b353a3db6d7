"""Inputs that exhaust a parser's own limits are bad input like any other, never a traceback:
a saved state nested past the interpreter's stack is set aside and the agent starts fresh
(it crash-looped under systemd), a stage key past Python's 4,300-digit integer limit is no
stage, a manifest dtype numpy refuses with SyntaxError is a BundleError, and a payload map
whose keys mix text and bytes is refused as malformed (ValueError), not a sorting TypeError."""

from __future__ import annotations

import json
import shutil

import pytest

from agent.ops.state import StateStore
from agent.policies.dtoee.payload import from_payload
from agent.policies.dtoee.protocol import Request
from agent.policies.thresholds import thresholds_from_wire
from engines.bundle import BundleError, load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def test_a_saved_state_nested_past_the_stack_is_set_aside_and_the_agent_starts_fresh(tmp_path):
    """Rule: StateStore.load never raises; the file goes to .corrupt and None comes back."""
    path = tmp_path / "state.json"
    path.write_text('{"format_version": 1, "state": {"policy": "cf", "x": ' + "[" * 100000,
                    encoding="utf-8")
    assert StateStore(str(tmp_path)).load() is None
    assert not path.exists() and (tmp_path / "state.json.corrupt").exists()


def test_a_stage_key_of_thousands_of_digits_is_no_stage():
    """Rule: a received thresholds map keeps only keys that can be stage numbers."""
    assert thresholds_from_wire({"9" * 5000: 0.5, "2": 0.7}) == {2: 0.7}
    assert thresholds_from_wire({"1234567": 0.5}) == {}


def test_a_manifest_dtype_numpy_cannot_parse_is_a_bundle_error(tmp_path):
    """Rule: any dtype string numpy refuses (a 5,000-digit one raises SyntaxError in numpy)
    is one BundleError naming the field."""
    folder = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE_DIR, str(folder))
    manifest = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    manifest["stages"][0]["input"]["dtype"] = "9" * 5000
    (folder / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match="dtype"):
        load_bundle(str(folder))


def test_a_payload_whose_keys_mix_text_and_bytes_is_malformed_not_a_crash():
    """Rule: from_payload raises ValueError (counted bad_payload), whatever the keys' types."""
    with pytest.raises(ValueError, match="Request fields"):
        from_payload(Request, {"a": 1, b"b": 2})


def test_a_topology_threshold_key_of_thousands_of_digits_is_a_topology_error():
    """Rule: the testbed refuses it in one line naming thresholds (it was a traceback)."""
    from agent.testbed.topology import TopologyError, parse_topology

    chain = ["s1", "w1", "w2", "w3", "w4"]
    with pytest.raises(TopologyError, match="thresholds: key .* is not an early-exit stage"):
        parse_topology({"sources": [{"id": "s1", "share": 1.0}],
                        "workers": [{"id": w, "stage": h} for h, w in enumerate(chain[1:], 1)],
                        "links": [{"from": a, "to": b} for a, b in zip(chain, chain[1:])],
                        "thresholds": {"9" * 5000: 0.5}})
