"""No silent CPU: accelerator = "required" stops the agent with one line and exit status 78 when
its engine would run on the CPU (this machine has no GPU); "preferred" runs on the CPU with the
fallback's cause logged at WARNING, in engines.json and in the metrics; "none" is the CPU on
purpose, without a fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.config.node import ConfigError, parse_config
from agent.errors import EXIT_CONFIG, UsageError
from agent.ops.metrics import AgentMetrics
from agent.testbed.ports import free_ports
from engines.accelerator import (AcceleratorUnavailable, check_engines, report_engines,
                                 resolve_accelerator)
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NODE = """node_id = "w1"
role = "worker"
stage = 1
bundle = "{bundle}"
state_dir = "{state}"
control_bind = "tcp://127.0.0.1:{control_port}"
data_bind = "tcp://127.0.0.1:{data_port}"
security = "none"
backend = "onnxruntime"
accelerator = "{accelerator}"

[[peers]]
id = "s1"
stage = 0
control_address = "tcp://127.0.0.1:5541"
data_address = "tcp://127.0.0.1:5542"

[[peers]]
id = "w2"
stage = 2
control_address = "tcp://127.0.0.1:5561"
data_address = "tcp://127.0.0.1:5562"
"""


def _no_gpu():
    import onnxruntime as ort

    if any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider",
                                                         "TensorrtExecutionProvider")):
        pytest.skip("this onnxruntime has a GPU provider: the CPU fallback cannot be shown here")


def test_required_on_this_machine_exits_78_with_one_line(tmp_path):
    """`edge-agent run` with accelerator = "required" and no GPU: one error line naming the cause
    and `edge-agent doctor`, exit status 78 (systemd's RestartPreventExitStatus)."""
    _no_gpu()
    cfg = tmp_path / "w1.toml"
    control_port, data_port = free_ports(2)
    cfg.write_text(NODE.format(bundle=DEMO_BUNDLE_DIR, state=tmp_path / "state",
                               accelerator="required", control_port=control_port,
                               data_port=data_port))
    proc = subprocess.run([sys.executable, "-m", "agent", "--log-level", "ERROR", "run", "--config",
                           str(cfg)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge-agent run: error: %s: stage 1 would run on the CPU (" % cfg)
    assert "not in this onnxruntime build" in lines[0] and "edge-agent doctor" in lines[0]
    written = json.loads((tmp_path / "state" / "engines.json").read_text())
    assert written["accelerator"] == "required" and not written["stages"]["1"]["on_gpu"]


def test_preferred_falls_back_with_the_cause_in_log_file_and_metrics(tmp_path, caplog):
    """preferred: the engine loads on the CPU; WARNING with the cause; engines.json and the
    edge_agent_engine_* metrics show it."""
    _no_gpu()
    stage = load_bundle(DEMO_BUNDLE_DIR).stages[0]
    engine = load_engine(stage, backend="auto", accelerator="preferred")
    assert any(r.levelname == "WARNING" and "falling back" in r.getMessage() for r in caplog.records)
    report = check_engines("preferred", {1: engine}, str(tmp_path))
    reasons = [f["reason"] for f in report["1"]["fallbacks"]]
    assert reasons[-1] == "provider_missing" and not report["1"]["on_gpu"]
    m = AgentMetrics("w1")
    report_engines({1: engine}, m)
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    assert 'edge_agent_engine_on_gpu{backend="onnxruntime",node="w1",stage="1"} 0.0' in text
    assert 'edge_agent_engine_fallbacks_total{node="w1",reason="provider_missing",stage="1"} 1.0' in text
    with pytest.raises(AcceleratorUnavailable):
        check_engines("required", {1: engine})


def test_none_runs_on_the_cpu_on_purpose():
    """accelerator = "none": CPU provider only, no fallback recorded; tensorrt is refused."""
    stage = load_bundle(DEMO_BUNDLE_DIR).stages[0]
    engine = load_engine(stage, backend="auto", accelerator="none")
    assert engine.info["providers"] == ["CPUExecutionProvider"]
    assert not engine.info.get("fallbacks")
    assert check_engines("none", {1: engine})["1"]["on_gpu"] is False
    with pytest.raises(UsageError, match="needs the GPU"):
        load_engine(stage, backend="tensorrt", accelerator="none")


def test_default_is_required_on_a_jetson_and_preferred_elsewhere(tmp_path):
    """"" resolves by /etc/nv_tegra_release under the root."""
    assert resolve_accelerator("", str(tmp_path)) == "preferred"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n")
    assert resolve_accelerator("", str(tmp_path)) == "required"
    assert resolve_accelerator("none", str(tmp_path)) == "none"


def test_int8_is_refused_the_same_way_by_config_cli_and_engine(tmp_path):
    """int8: a config error, a CLI usage error, and an engine usage error, each saying why."""
    raw = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": str(tmp_path), "control_bind": "tcp://127.0.0.1:5551",
           "data_bind": "tcp://127.0.0.1:5552", "precision": "int8",
           "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5541",
                      "data_address": "tcp://127.0.0.1:5542"}]}
    with pytest.raises(ConfigError, match="int8 is not supported"):
        parse_config(raw)
    with pytest.raises(UsageError, match="int8 is not supported"):
        load_engine(load_bundle(DEMO_BUNDLE_DIR).stages[0], precision="int8")
    proc = subprocess.run([sys.executable, "-m", "agent", "calibrate", "--bundle", DEMO_BUNDLE_DIR,
                           "--precision", "int8", "--state-dir", str(tmp_path / "cal")],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    assert proc.returncode == 2 and "int8 is not supported" in proc.stderr
