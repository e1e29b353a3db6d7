"""What `pip install '.[jetson]'` resolves on a Jetson (linux aarch64, JetPack 5 = Python 3.8 and
JetPack 6 = Python 3.10), by pip's own dry-run resolver against the package index: no
onnxruntime from the index (it would shadow NVIDIA's Jetson wheel), the CUDA binding the TensorRT
backend imports (cuda-python 11.x for CUDA 11.4, 12.x for CUDA 12), and numpy inside the bounds
TensorRT 8.5 and NVIDIA's wheels work with.

pip evaluates environment markers with the interpreter it runs on, so each case runs pip on a
real interpreter of that Python version (pyenv's, or python3.X on PATH); the aarch64 wheels come
from --platform. ``.`` is the project's wheel, built once by pip as ``pip install .`` builds it,
and the cases resolve at once. Skipped with the reason when no such interpreter exists or the
index cannot be reached, before the resolutions or while pip runs them (its output names the
connection that failed).
"""

import json
import os
import platform
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AARCH64_TAGS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64",
                "linux_aarch64")
PIP_TIMEOUT_S = 600
# What pip prints (its own words, urllib3's and the resolver's) where it could not reach the
# package index: this machine's network, not the project's requirements, is at fault.
NETWORK_FAILURES = ("ConnectionError", "NewConnectionError", "ConnectTimeoutError",
                    "ReadTimeoutError", "Max retries", "Could not fetch", "connection broken by",
                    "Temporary failure in name resolution", "Network is unreachable",
                    "Connection reset by peer", "Connection refused", "RemoteDisconnected")


class IndexLost(Exception):
    """pip failed because it could not reach the package index (the message says where)."""


def _index_lost(out: str) -> str:
    """The line of a failed pip run's output ``out`` that says it could not reach the index,
    or '' (also where pip found the requirements in conflict: the project's fault)."""
    if "ResolutionImpossible" in out:
        return ""
    for line in out.splitlines():
        if any(word in line for word in NETWORK_FAILURES):
            return "pip could not reach the package index: %s" % line.strip()[:300]
    return ""


def _pip_failed(returncode: int, out: str) -> None:
    """Raise ``IndexLost`` for a pip run that failed on the network, AssertionError (with
    pip's output) for any other failure."""
    if returncode != 0 and _index_lost(out):
        raise IndexLost(_index_lost(out))
    assert returncode == 0, out[-3000:]


def _interpreter(version: str):
    """A Python ``version`` interpreter with pip, or None."""
    candidates = []
    root = os.path.expanduser("~/.pyenv/versions")
    if os.path.isdir(root):
        for v in sorted(os.listdir(root), reverse=True):
            if v == version or v.startswith(version + "."):
                candidates.append(os.path.join(root, v, "bin", "python3"))
    candidates.append(shutil.which("python" + version) or "")
    for c in candidates:
        if c and os.access(c, os.X_OK) and subprocess.run(
                [c, "-m", "pip", "--version"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode == 0:
            return c
    return None


def _index_reachable(python: str) -> bool:
    try:
        proc = subprocess.run([python, "-m", "pip", "index", "versions", "jetson-stats"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=120)
    except subprocess.TimeoutExpired:  # an index that does not answer
        return False
    return proc.returncode == 0 and "jetson-stats" in proc.stdout


X86_64_TAGS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
# case -> (Python version, requirement, platform tags): every resolution the tests below check
CASES = {"jetson-3.8": ("3.8", ".[jetson]", AARCH64_TAGS),
         "jetson-3.10": ("3.10", ".[jetson]", AARCH64_TAGS),
         "gpu-3.10": ("3.10", ".[gpu]", X86_64_TAGS)}


def _start(python: str, version: str, spec: str, folder: str, tags):
    """pip's dry-run resolution of ``spec`` for ``version`` on ``tags``, started (a Popen)."""
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", os.path.join(folder, "report.json"), "--only-binary=:all:",
           "--python-version", version, "--target", os.path.join(folder, "target")]
    for tag in tags:
        cmd += ["--platform", tag]
    return subprocess.Popen(cmd + [spec], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)


def _report(proc, folder: str) -> dict:
    """{package: version} that the finished resolution ``proc`` reported (``IndexLost``
    where it failed on the network)."""
    try:
        out = proc.communicate(timeout=PIP_TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0] + "\n(timed out after %d s)" % PIP_TIMEOUT_S
    _pip_failed(proc.returncode, out)
    with open(os.path.join(folder, "report.json")) as f:
        items = json.load(f)["install"]
    return {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
            for i in items}


def _wheel(python: str, folder: str) -> str:
    """The project's wheel, built by pip as ``pip install .`` builds it before it resolves
    (``IndexLost`` where its build requirements could not be fetched)."""
    proc = subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", folder,
                           REPO], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=PIP_TIMEOUT_S)
    _pip_failed(proc.returncode, proc.stdout)
    (name,) = [n for n in os.listdir(folder) if n.endswith(".whl")]
    return os.path.join(folder, name)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """case -> {package: version}, the AssertionError it failed with, or the reason it cannot
    run here (no interpreter, or the index not reached: before or during pip's run). pip
    builds the project's wheel once (``.[extra]`` is that wheel's metadata: what ``pip
    install '.[extra]'`` builds and resolves) and the resolutions run at once (each is seconds
    of pip's CPU; in turn they took 40 s on a 2-core machine); each test asserts on its own
    case."""
    pythons, reachable, runnable, got = {}, {}, {}, {}
    for case, (version, spec, tags) in CASES.items():
        if tags == X86_64_TAGS and platform.machine() != "x86_64":
            got[case] = "pip evaluates platform markers on this machine, which is not x86_64"
            continue
        if version not in pythons:
            pythons[version] = _interpreter(version)
        python = pythons[version]
        if python is None:
            got[case] = "no Python %s interpreter with pip here (pyenv or python%s)" % (
                version, version)
            continue
        if python not in reachable:
            reachable[python] = _index_reachable(python)
        if not reachable[python]:
            got[case] = "the package index cannot be reached from this machine"
            continue
        runnable[case] = python
    if not runnable:
        return got
    try:
        wheel = _wheel(next(iter(runnable.values())), str(tmp_path_factory.mktemp("wheel")))
    except AssertionError as exc:  # every runnable case fails with pip's output
        return dict(got, **{case: exc for case in runnable})
    except IndexLost as exc:  # every runnable case is skipped with the reason
        return dict(got, **{case: str(exc) for case in runnable})
    started = {}
    try:
        for case, python in runnable.items():
            version, spec, tags = CASES[case]
            assert spec.startswith(".[")
            folder = str(tmp_path_factory.mktemp(case))
            started[case] = (_start(python, version, wheel + spec[1:], folder, tags), folder)
        for case, (proc, folder) in started.items():
            try:
                got[case] = _report(proc, folder)
            except AssertionError as exc:  # the test of this case fails with pip's output
                got[case] = exc
            except IndexLost as exc:  # the test of this case is skipped with the reason
                got[case] = str(exc)
    finally:
        for proc, _ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return got


def _resolution(resolved, case: str) -> dict:
    """``case``'s resolution; skips with the reason where it cannot run here."""
    got = resolved[case]
    if isinstance(got, str):
        pytest.skip(got)
    if isinstance(got, AssertionError):
        raise got
    return got


def _major_minor(v: str):
    parts = v.split(".")
    return int(parts[0]), int(parts[1])


@pytest.mark.slow
@pytest.mark.parametrize("version,cuda_major,numpy_below", [("3.8", 11, (1, 24)),
                                                            ("3.10", 12, (2, 0))])
def test_jetson_extra_resolves_for_aarch64_without_index_onnxruntime(version, cuda_major,
                                                                     numpy_below, resolved):
    """`.[jetson]` on aarch64: no index onnxruntime, cuda-python of the JetPack's CUDA major,
    numpy below the bound, jetson-stats >= 4.3."""
    got = _resolution(resolved, "jetson-" + version)
    assert not {"onnxruntime", "onnxruntime-gpu"} & set(got), got
    assert "cuda-python" in got, got
    assert _major_minor(got["cuda-python"])[0] == cuda_major, got
    assert _major_minor(got["numpy"]) < numpy_below, got
    assert _major_minor(got["jetson-stats"]) >= (4, 3), got
    assert "edge-agent" in got
    for heavy in ("scipy", "matplotlib", "onnx"):  # workstation tools stay out of a device
        assert heavy not in got, got


@pytest.mark.slow
def test_gpu_extra_installs_exactly_one_onnxruntime_on_x86_64(resolved):
    """`.[gpu]` on x86_64: onnxruntime-gpu only (two builds would overwrite one module)."""
    got = _resolution(resolved, "gpu-3.10")
    assert "onnxruntime-gpu" in got and "onnxruntime" not in got, got
