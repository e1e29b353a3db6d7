"""Policy modules stay pure: no sockets, threads, processes, engines or hardware.

Two checks: (1) the source of every module under ``agent/policies`` (and the pure exit-profile
module) imports none of the banned modules directly; (2) importing them all in a fresh
interpreter loads no messaging, engine or hardware library even transitively. (numpy/scipy
themselves load ``socket``/``subprocess`` internally, so the transitive check covers the
libraries a policy could only reach through our own code.)
"""

import ast
import json
import pathlib
import pkgutil
import subprocess
import sys

import agent.policies

DIRECT_BAN = {"zmq", "socket", "threading", "onnxruntime", "tensorrt", "jtop", "asyncio",
              "multiprocessing", "subprocess", "selectors", "concurrent", "pycuda", "cuda",
              "agent.net.transport", "agent.node.loop", "engines.backends", "calibration"}
TRANSITIVE_BAN = {"zmq", "onnxruntime", "tensorrt", "jtop", "pycuda", "cuda", "torch"}

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _policy_files():
    files = sorted((ROOT / "agent" / "policies").glob("*.py"))
    return files + [ROOT / "engines" / "exit_profile.py"]


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _banned(name, banned):
    parts = name.split(".")
    return any(".".join(parts[:i]) in banned for i in range(1, len(parts) + 1))


def test_policy_sources_import_no_io_threads_or_engines():
    """No policy module names a socket, thread, process, engine or hardware module."""
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if _banned(n, DIRECT_BAN))
           for p in _policy_files()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_importing_policies_loads_no_messaging_or_engine_library():
    """Importing every policy module in a fresh interpreter pulls in no zmq/onnxruntime/TensorRT."""
    mods = ["agent.policies." + m.name for m in pkgutil.iter_modules(agent.policies.__path__)]
    mods.append("engines.exit_profile")
    code = (
        "import importlib, json, sys\n"
        "for m in %r: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n" % (mods,)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert sorted(m for m in loaded if _banned(m, TRANSITIVE_BAN)) == []
