"""Shared by the calibration integration tests: the bundle they calibrate, a board test file run
in its namespace, and a stage engine wrapper that injects a slow-down."""

from __future__ import annotations

import json
import os
import shutil
import time

import onnx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def calibration_bundle(tmp_dir: str) -> str:
    """A private copy of the shipped demo bundle (tests may edit it)."""
    from engines.demo import DEMO_BUNDLE_DIR

    out = os.path.join(tmp_dir, "bundle")
    shutil.copytree(DEMO_BUNDLE_DIR, out)
    return out


class Board:
    """Inside a board test file's namespace (its ``main``): a fresh emulated board under
    ``OUT_DIR/work`` (``env``) with jetson-stats' service (``service``, replaced by ``restart``),
    the ``emulated_orin`` module (``eo``), and ``result``, written to ``OUT_DIR/result.json`` on
    exit with the service stopped (``log_tail``: the service log's end in it too)."""

    def __init__(self, out_dir: str, jetson_clocks: bool = False,
                 command_timeout_s: float = 0.0, log_tail: bool = False) -> None:
        from tests.integration import emulated_orin as eo

        self.eo, self.out_dir, self.log_tail = eo, out_dir, log_tail
        self.work = os.path.join(out_dir, "work")
        os.makedirs(self.work)
        self.env = eo.build_board(self.work, jetson_clocks=jetson_clocks)
        self.service = eo.start_service(self.work, self.env, command_timeout_s=command_timeout_s)
        self.result: dict = {}

    def restart(self) -> None:
        """Start the service again after ``eo.stop_service(self.service)``, as its unit does."""
        self.service = self.eo.restart_service(self.work, self.env)

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.eo.stop_service(self.service)
        if self.log_tail:
            with open(os.path.join(self.work, "service.log")) as f:
                self.result["service_log_tail"] = f.read()[-3000:]
        with open(os.path.join(self.out_dir, "result.json"), "w") as f:
            json.dump(self.result, f, indent=1)


def board_run(test_file: str, tmp_path_factory, name: str, *args: str) -> dict:
    """Run board test file ``test_file`` (its ``main``) once in a private mount namespace, on a
    copy of the demo bundle, in a fresh folder named ``name``; its result.json."""
    from tests.integration.emulated_orin import run_board_script

    out = tmp_path_factory.mktemp(name)
    return run_board_script(os.path.abspath(test_file), str(out), calibration_bundle(str(out)),
                            *args)


def change_stage_file(bundle_dir: str, index: int) -> None:
    """Give stage ``index`` a new ONNX file (same graph, new doc string) and update the
    manifest's hash, as rebuilding the stage would."""
    from engines.bundle import sha256_file

    manifest_path = os.path.join(bundle_dir, "bundle.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    entry = [s for s in manifest["stages"] if s["index"] == index][0]
    path = os.path.join(bundle_dir, entry["file"])
    model = onnx.load(path)
    model.doc_string = "rebuilt %f" % time.time()
    onnx.save(model, path)
    entry["sha256"] = sha256_file(path)
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)


class SlowedEngine:
    """Wraps a real engine; after ``slow_down(extra_s)`` every run takes ``extra_s`` longer
    (as a throttled or down-clocked device would)."""

    def __init__(self, engine):
        self.engine = engine
        self.info = engine.info
        self.extra_s = 0.0

    def slow_down(self, extra_s: float) -> None:
        self.extra_s = extra_s

    def run(self, x):
        out = self.engine.run(x)
        if self.extra_s > 0:
            time.sleep(self.extra_s)
        return out
