"""Bundle manifests at the limits of the reader fail with one line, never a hang or later crash."""

from __future__ import annotations

import json
import os
import threading

import pytest

from engines.bundle import MANIFEST_NAME, BundleError, load_bundle, read_manifest
from engines.tiny_model import build_tiny_bundle


def test_flops_too_large_for_a_float_are_refused_at_read_time(tmp_path):
    """Rule: a 400-digit flops count is a manifest error, not an OverflowError later."""
    bundle = build_tiny_bundle(str(tmp_path)).path
    path = os.path.join(bundle, MANIFEST_NAME)
    with open(path) as f:
        obj = json.load(f)
    obj["stages"][0]["flops"] = 10 ** 400
    with open(path, "w") as f:
        json.dump(obj, f)
    with pytest.raises(BundleError, match=r"needs flops in \[0, 2\*\*63\).*a 401-digit number") as info:
        load_bundle(bundle)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_fifo_as_the_manifest_is_refused_without_blocking(tmp_path):
    """Rule: a FIFO named bundle.json is refused at once (no writer is waited for)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    path = str(bundle / MANIFEST_NAME)
    os.mkfifo(path)
    result = {}

    def read():
        try:
            read_manifest(str(bundle))
        except BundleError as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_manifest blocked on a FIFO")
    assert "FIFO" in result["error"]


def test_a_manifest_nested_too_deep_is_a_bundle_error(tmp_path):
    """Rule: bundle.json nested 100000 levels is 'not valid JSON', one line."""
    (tmp_path / MANIFEST_NAME).write_text("[" * 100000)
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(str(tmp_path))


def test_a_regular_file_as_the_bundle_says_a_directory_is_expected(tmp_path):
    """Rule: a bundle path naming a regular file other than bundle.json is 'is a file;
    expected a bundle directory (holding bundle.json)', not 'no manifest' or 'not valid JSON'."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07onnx")
    with pytest.raises(BundleError, match=r"model.onnx: is a file; expected a bundle directory "
                                          r"\(holding bundle.json\)") as info:
        load_bundle(str(path))
    assert "not valid JSON" not in str(info.value)


@pytest.mark.parametrize("raw, said", [
    ('"version": 1, "version": 1,', "version: given twice"),
    ('"lossy": 1e400,', "lossy: 1e400 is above the largest float"),
])
def test_a_key_given_twice_or_a_number_no_float_holds_is_named_in_the_manifest(tmp_path, raw,
                                                                               said):
    """Rule: bundle.json is read as every other JSON input is: a key given twice (JSON would
    keep the last without a word) or a number no float holds (read as inf) is refused, naming
    the manifest and the field, before any field is looked at."""
    bundle = build_tiny_bundle(str(tmp_path)).path
    path = os.path.join(bundle, MANIFEST_NAME)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('"version": 1,', raw, 1))
    with pytest.raises(BundleError) as info:
        read_manifest(bundle)
    assert str(info.value).startswith(path + ": not valid JSON ("), info.value
    assert said in str(info.value), info.value
