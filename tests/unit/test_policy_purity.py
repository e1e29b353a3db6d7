"""Policy modules stay pure: no sockets, threads, processes, engines, hardware or files.

Every module under ``agent/policies`` is checked three ways: (1) from source, everything it can
run when imported or called, following the project's own imports transitively (module and
function level, parent packages included), reaches none of the banned modules; (2) neither its
own source nor that of any project module it reaches does file I/O (a reader imported from
elsewhere, such as ``engines.bundle.read_manifest``, counts as the policy's); (3) importing them
all in a fresh interpreter loads no messaging, engine or hardware library. (numpy/scipy
themselves load ``socket``/``subprocess`` internally, so the source walk stops at third-party
libraries and names only what our code imports.)

``engines.exit_profile`` (the exit profile data type and its maths) may be imported, but not
the engine loader and backends (``engines/__init__`` imports neither). Its two file helpers,
``load_exit_profile`` (through ``engines.npzfile.load_npz``) and ``save_exit_profile``
(``np.savez_compressed``), are the file I/O the policies may reach (``IO_ALLOWED``): the
policies call neither, they are handed the profile.
"""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List

from tests.unit.import_graph import ROOT, Module, chain, find_modules, reached

BANNED = {
    # sockets, threads, processes, event loops
    "socket", "zmq", "threading", "_thread", "subprocess", "multiprocessing", "asyncio",
    "selectors", "concurrent",
    # engines and hardware
    "onnxruntime", "tensorrt", "pycuda", "cuda", "torch", "jtop",
    "engines.loader", "engines.ort_backend", "engines.trt_backend",
    # the runtime's I/O side
    "agent.net", "agent.node", "agent.ops", "agent.testbed", "agent.fleet", "calibration",
}
TRANSITIVE_BAN = {"zmq", "onnxruntime", "tensorrt", "jtop", "pycuda", "cuda", "torch"}
# calls that read or write files: open(), os.replace/rename/remove, numpy's save/load helpers,
# pathlib's read/write shortcuts
IO_CALLS = {"open", "os.open", "io.open", "os.replace", "os.rename", "os.remove", "os.unlink",
            "np.save", "np.savez", "np.savez_compressed", "np.load", "np.savetxt", "np.loadtxt",
            "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.load"}
IO_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes"}
POLICIES = "agent.policies"
# project modules whose file I/O a policy may reach: the exit profile's module (its data type
# and maths are the policies'; its reader and writer sit beside them and run at start-up, on
# the node or in the simulator, never in a policy's decisions) and the numpy file reader it
# loads through
IO_ALLOWED = {"engines.exit_profile", "engines.npzfile"}


def _banned(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in BANNED for i in range(1, len(parts) + 1))


def _dotted(func: ast.AST) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return _dotted(func.value) + "." + func.attr
    return ""


def file_io_calls(mod: Module) -> List[str]:
    """``name:line`` of every call in ``mod``'s own source that reads or writes a file."""
    tree = ast.parse(mod.path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in IO_CALLS or (isinstance(node.func, ast.Attribute)
                                    and node.func.attr in IO_METHODS):
                out.append("%s:%d" % (name or node.func.attr, node.lineno))
    return out


def impurities(modules: Dict[str, Module], package: str) -> Dict[str, List[str]]:
    """For each module in ``package``: the banned modules it reaches (with the import path),
    its own file I/O calls, then those of every other project module it reaches (with the
    import path; ``IO_ALLOWED`` and banned modules, already reported, left out); modules with
    nothing to report are left out."""
    out: Dict[str, List[str]] = {}
    for name in sorted(modules):
        if name != package and not name.startswith(package + "."):
            continue
        inside, outside = reached(name, modules)
        bad = ["%s (via %s)" % (m, " -> ".join(chain(name, m, inside)))
               for m in sorted(inside) if _banned(m)]
        bad += ["%s (via %s)" % (m, " -> ".join(chain(name, outside[m], inside)))
                for m in sorted(outside) if _banned(m)]
        bad += ["file I/O %s" % c for c in file_io_calls(modules[name])]
        bad += ["file I/O %s in %s (via %s)" % (c, m, " -> ".join(chain(name, m, inside)))
                for m in sorted(inside) if m != name and m not in IO_ALLOWED and not _banned(m)
                for c in file_io_calls(modules[m])]
        if bad:
            out[name] = bad
    return out


def test_policy_modules_reach_no_io_threads_engines_or_runtime_parts():
    """No module under agent/policies reaches (transitively) a socket, thread, process,
    engine, hardware or runtime-I/O module, nor opens, saves or loads a file itself."""
    assert impurities(find_modules(), POLICIES) == {}


def _write(root: pathlib.Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_purity_check_fails_on_a_policy_that_imports_a_banned_module(tmp_path):
    """The same check, on a policy-like package written to disk: a direct socket import, a
    banned library reached through a helper module, a real runtime module (agent.net), a file
    opened in policy code and a file reader imported from another project module (a helper
    package, ``engines.bundle``, ``agent.scenario.format``) are each reported; the pure module
    is not."""
    _write(tmp_path, {
        "toyio/__init__.py": "",
        "toyio/reader.py": "def read(p):\n    with open(p) as f:\n        return f.read()\n",
        "toypol/reads.py": "from toyio.reader import read\n",
        "toypol/manifest.py": "from engines.bundle import read_manifest\n",
        "toypol/scenario.py": "from agent.scenario.format import load_scenario\n",
        "toypol/__init__.py": "",
        "toypol/pure.py": "import math\nfrom agent.errors import UsageError\n",
        "toypol/direct.py": "import socket\n",
        "toypol/helper.py": "def f():\n    import zmq\n    return zmq\n",
        "toypol/indirect.py": "from toypol import helper\n",
        "toypol/runtime.py": "from agent.net.transport import Transport\n",
        "toypol/files.py": "import numpy as np\n\ndef f(p):\n    with open(p) as f:\n"
                           "        return np.load(f)\n",
    })
    modules = dict(find_modules())
    modules.update(find_modules(tmp_path, ["toypol", "toyio"]))
    found = impurities(modules, "toypol")
    assert "toypol.pure" not in found and "toypol" not in found
    assert found["toypol.direct"] == ["socket (via toypol.direct)"]
    assert found["toypol.helper"] == ["zmq (via toypol.helper)"]
    assert found["toypol.indirect"] == ["zmq (via toypol.indirect -> toypol.helper)"]
    assert "agent.net.transport (via toypol.runtime -> agent.net.transport)" in \
        found["toypol.runtime"]
    assert any(m.startswith("zmq (via toypol.runtime -> agent.net.transport")
               for m in found["toypol.runtime"])
    assert found["toypol.files"] == ["file I/O open:4", "file I/O np.load:5"]
    assert found["toypol.reads"] == ["file I/O open:2 in toyio.reader "
                                     "(via toypol.reads -> toyio.reader)"]
    for mod, reader in (("manifest", "engines.bundle"), ("scenario", "agent.scenario.format")):
        assert any(m.startswith("file I/O open:") and
                   m.endswith(" in %s (via toypol.%s -> %s)" % (reader, mod, reader))
                   for m in found["toypol." + mod]), found["toypol." + mod]


def test_the_exit_profile_file_helpers_are_the_only_file_io_policies_may_reach(tmp_path):
    """``engines.exit_profile`` and ``engines.npzfile`` (the exit profile's reader and writer)
    do file I/O, which a policy importing the exit profile does not answer for; the same
    policy importing ``engines.bundle`` does."""
    modules = find_modules()
    assert file_io_calls(modules["engines.exit_profile"]) and \
        file_io_calls(modules["engines.npzfile"])
    _write(tmp_path, {
        "toypol/__init__.py": "",
        "toypol/profile.py": "from engines.exit_profile import load_exit_profile\n",
        "toypol/bundle.py": "from engines.exit_profile import load_exit_profile\n"
                            "from engines.bundle import read_manifest\n",
    })
    modules = dict(modules)
    modules.update(find_modules(tmp_path, ["toypol"]))
    found = impurities(modules, "toypol")
    assert "toypol.profile" not in found
    io = [m for m in found["toypol.bundle"] if m.startswith("file I/O ")]
    assert io and all(" in engines.bundle (via toypol.bundle -> engines.bundle)" in m
                      for m in io), io


# Run in a fresh interpreter: records each banned module imported while the policy modules are
# imported, with the innermost frame that is neither the import machinery nor the standard
# library (so ``import logging.handlers`` in a policy, which loads socket, is the policy's;
# socket loaded by scipy is scipy's).
_WATCH = r"""
import importlib, json, os, sys, sysconfig, traceback
import logging  # loads threading for its locks: imported before the watch starts
STDLIB = os.path.realpath(sysconfig.get_paths()["stdlib"])
BANNED, MODS = json.loads(sys.argv[1]), json.loads(sys.argv[2])

def banned(name):
    parts = name.split(".")
    return any(".".join(parts[:i]) in BANNED for i in range(1, len(parts) + 1))

def culprit():
    for fr in reversed(traceback.extract_stack()[:-2]):
        path = os.path.realpath(fr.filename)
        if fr.filename.startswith("<") or (path.startswith(STDLIB) and not any(
                d in path for d in ("site-packages", "dist-packages"))):
            continue
        return path, fr.lineno
    return "?", 0

class Watch:
    found = []

    def find_spec(self, name, path=None, target=None):
        if banned(name) and name not in sys.modules:
            self.found.append([name] + list(culprit()))
        return None

sys.meta_path.insert(0, Watch())
for m in MODS:
    importlib.import_module(m)
print(json.dumps([sorted(sys.modules), Watch.found]))
"""


def _import_watched(modules: List[str], cwd: pathlib.Path):
    """(every module loaded, [banned module, file, line] of each banned import and the
    innermost file outside the standard library that asked for it) of importing ``modules``
    in a fresh interpreter started in ``cwd``."""
    out = subprocess.run([sys.executable, "-c", _WATCH, json.dumps(sorted(BANNED)),
                          json.dumps(modules)], capture_output=True, text=True, check=True,
                         cwd=str(cwd))
    return json.loads(out.stdout)


def _ours(found, roots) -> List[str]:
    """The banned imports asked for by a file under one of ``roots`` (not a library's)."""
    return ["%s (%s:%d)" % (name, path, line) for name, path, line in found
            if any(path.startswith(os.path.realpath(str(r)) + os.sep) for r in roots)]


def test_importing_policies_loads_no_messaging_or_engine_library():
    """Importing every policy module in a fresh interpreter pulls in no zmq/onnxruntime/TensorRT,
    and no banned module (socket, threads, processes, the runtime) at the request of the
    project's own code, directly or through the standard library: the source walk above stops
    at the standard library, this does not (libraries such as scipy may load what they need)."""
    mods = [n for n in find_modules() if n == POLICIES or n.startswith(POLICIES + ".")]
    loaded, found = _import_watched(mods, ROOT)
    parts = [m.split(".") for m in loaded]
    assert sorted(".".join(p) for p in parts
                  if any(".".join(p[:i]) in TRANSITIVE_BAN for i in range(1, len(p) + 1))) == []
    assert _ours(found, [ROOT / "agent", ROOT / "engines"]) == []


def test_the_import_watch_names_a_banned_module_reached_through_the_standard_library(tmp_path):
    """The runtime check, on a policy-like package: ``import logging.handlers`` (which loads
    socket) and ``importlib.import_module("subprocess")`` are the package's own banned imports;
    scipy.optimize loading socket for itself is not; a pure module reports nothing."""
    _write(tmp_path, {
        "toypol/__init__.py": "",
        "toypol/pure.py": "import math\nimport scipy.optimize\n",
        "toypol/handlers.py": "import logging.handlers\n",
        "toypol/dynamic.py": "import importlib\nimportlib.import_module('subprocess')\n",
    })
    _, found = _import_watched(["toypol.pure"], tmp_path)
    assert _ours(found, [tmp_path]) == []
    _, found = _import_watched(["toypol.handlers", "toypol.dynamic"], tmp_path)
    ours = _ours(found, [tmp_path])
    assert any(m.startswith("socket (%s" % (tmp_path / "toypol" / "handlers.py")) for m in ours)
    assert any(m.startswith("subprocess (%s" % (tmp_path / "toypol" / "dynamic.py"))
               for m in ours)


def test_engine_side_modules_policies_may_import_are_pure():
    """``engines.embedding`` (the input embedding DIMEE computes on a node, in the simulator and
    in ``plan``) reaches no banned module and does no file I/O, like the policy modules."""
    assert impurities(find_modules(), "engines.embedding") == {}
