"""One agent per state_dir, and the files of a state directory a run with sudo left root's.

``agent.node.statelock``: a node holds an exclusive ``flock`` on ``<state_dir>/.lock`` (its
pid and node id in it) from before anything reads the state directory until it closes; a
second holder is refused in one line naming the first; the lock goes with the process, a
SIGKILLed one too; ``doctor --config`` reports a held lock (WARN) without keeping it. The files
a node appends to (records, journal, the lock) must be writable by the agent's user, or
``run`` exits 78 with the chown that fixes them. Real files, processes and users (the tests of
another user's view fork a child that takes the uid of ``nobody``; they need root).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from contextlib import redirect_stderr
from typing import Any, Callable

import pytest

from agent.cli import main
from agent.config.node import dump_config, parse_config
from agent.node.build import build
from agent.node.statelock import StateLock, holder
from agent.ops.doctor import WARN
from agent.ops.doctor_check import files_closed
from agent.ops.doctor_node import check_node
from agent.ops.files import FileFault
from engines.demo import DEMO_BUNDLE_DIR

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or not hasattr(os, "fork"),
                               reason="needs root, to act as another user (nobody)")


@pytest.fixture
def open_tmp():
    """A fresh folder nobody may enter (pytest's tmp_path lies in root's 0700 folder)."""
    path = tempfile.mkdtemp(prefix="edge-agent-test-")
    os.chmod(path, 0o755)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _config(tmp_path, **over) -> str:
    """A source config of the demo bundle (node s1) written to ``tmp_path/s1.toml``; its
    path."""
    obj = {"node_id": "s1", "role": "source", "stage": 0, "bundle": DEMO_BUNDLE_DIR,
           "state_dir": str(tmp_path / "state"), "security": "none",
           "control_bind": "tcp://127.0.0.1:7101", "data_bind": "tcp://127.0.0.1:7102",
           "peers": [{"id": "w9", "stage": 1, "last_stage": 4,
                      "control_address": "tcp://127.0.0.1:7103",
                      "data_address": "tcp://127.0.0.1:7104"}]}
    obj.update(over)
    path = tmp_path / "s1.toml"
    path.write_text(dump_config(parse_config(obj, str(tmp_path))))
    return str(path)


def _as_nobody(call: Callable[[], Any]) -> Any:
    """``call()`` in a forked child running as user nobody; what it returned (JSON). What
    ``run`` imports is imported first: nobody may not read the interpreter's own folders."""
    import agent.commands.run  # noqa: F401
    import agent.ops.malloc  # noqa: F401
    import agent.ops.openfiles  # noqa: F401
    import agent.ops.sdnotify  # noqa: F401
    import ctypes.util  # noqa: F401

    pw = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.write(w, json.dumps(call()).encode("utf-8"))
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().encode("utf-8"))
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, data.decode("utf-8", "replace")
    return json.loads(data.decode("utf-8"))


def _run_quietly(argv) -> dict:
    """``edge-agent ARGV`` in this process: its exit status and what it printed to stderr."""
    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(argv)
    return {"rc": rc, "err": err.getvalue()}


def test_a_second_lock_on_a_state_dir_is_refused_naming_the_holder(tmp_path):
    """Rule: while one holder has the state_dir, another is refused with one line naming the
    state_dir, the holder's pid and node id and the fix; released, the state_dir is free."""
    d = str(tmp_path)
    lock = StateLock(d, "s1")
    try:
        assert holder(d) == "%d s1" % os.getpid()
        with pytest.raises(FileFault) as err:
            StateLock(d, "w2")
        assert str(err.value) == ("state_dir: %s is in use by another agent (pid %d, node s1): "
                                  "give each node its own state_dir" % (d, os.getpid()))
    finally:
        lock.close()
    assert holder(d) is None
    StateLock(d, "w2").close()


def test_the_lock_goes_with_a_sigkilled_process(tmp_path):
    """Rule: a process SIGKILLed while it holds a state_dir (a crash, a power cut) leaves it
    free: its restart takes the lock at once."""
    d = str(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom agent.node.statelock import StateLock\n"
         "StateLock(sys.argv[1], 'w1')\nprint('held', flush=True)\ntime.sleep(600)\n", d],
        stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
    try:
        assert child.stdout.readline().strip() == b"held"
        assert holder(d) == "%d w1" % child.pid
        with pytest.raises(FileFault, match="pid %d, node w1" % child.pid):
            StateLock(d, "w1")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.stdout.close()
    StateLock(d, "w1").close()


def test_a_link_at_the_lock_path_is_refused_and_not_followed(tmp_path):
    """Rule: ``<state_dir>/.lock`` is opened without following a link: a symbolic link there
    is a one-line fault naming it, and the file it points to is neither written nor made."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    os.symlink(str(target), str(tmp_path / ".lock"))
    with pytest.raises(FileFault) as err:
        StateLock(str(tmp_path), "s1")
    assert str(err.value) == ("state_dir: %s is a symbolic link; remove it (the agent locks a "
                              "regular file there)" % (tmp_path / ".lock"))
    assert target.read_text() == "precious\n"


def test_a_built_node_holds_its_state_dir_until_it_is_closed(tmp_path):
    """Rule: ``build`` takes the state_dir's lock before it opens the task book (a second
    source on it would read the running one's journal as a crash), keeps it while the node
    lives and lets it go on close; a second build is refused and leaves no record or journal
    line of its own."""
    path = _config(tmp_path)
    from agent.config.node import load_config

    cfg = load_config(path)
    first = build(cfg)
    try:
        assert holder(cfg.state_dir) == "%d s1" % os.getpid()
        journal = os.path.join(cfg.state_dir, "records.jsonl.journal")
        before = os.path.getsize(journal)
        with pytest.raises(FileFault, match="is in use by another agent .pid %d, node s1." %
                           os.getpid()):
            build(cfg)
        assert os.path.getsize(journal) == before
        assert os.path.getsize(os.path.join(cfg.state_dir, "records.jsonl")) == 0
    finally:
        first.close()
    assert holder(cfg.state_dir) is None


def test_doctor_warns_of_a_state_dir_a_running_agent_holds_and_does_not_keep_its_lock(tmp_path):
    """Rule: ``doctor --config`` on a config whose state_dir an agent holds gives a WARN line
    after "node files" naming the lock, the agent's pid and node id and that run exits 78;
    it only tries the lock (the holder keeps it, and once free the doctor leaves it free)."""
    path = _config(tmp_path)
    (tmp_path / "state").mkdir()
    lock = StateLock(str(tmp_path / "state"), "s1")
    try:
        checks, _ = check_node(path)
        names = [c.name for c in checks]
        assert names[names.index("node files") + 1] == "node state lock", names
        line = checks[names.index("node state lock")]
        assert line.status == WARN
        assert "pid %d, node s1" % os.getpid() in line.detail, line.detail
        assert "run exits 78" in line.detail, line.detail
        assert holder(str(tmp_path / "state")) == "%d s1" % os.getpid()
    finally:
        lock.close()
    checks, _ = check_node(path)
    assert "node state lock" not in [c.name for c in checks]
    StateLock(str(tmp_path / "state"), "s1").close()  # doctor left it free


@ROOT_ONLY
def test_a_root_run_gives_the_lock_file_to_the_state_dirs_owner(open_tmp):
    """Rule: an agent run as root in a state_dir another user owns leaves the lock file that
    user's, so the agent run as that user next can open it."""
    nobody = pwd.getpwnam("nobody")
    d = open_tmp / "state"
    d.mkdir()
    os.chown(str(d), nobody.pw_uid, nobody.pw_gid)
    StateLock(str(d), "s1").close()
    assert os.stat(str(d / ".lock")).st_uid == nobody.pw_uid
    got = _as_nobody(lambda: (StateLock(str(d), "s1").close(), "taken")[1])
    assert got == "taken"


@ROOT_ONLY
def test_records_and_journal_left_roots_fail_the_start_with_the_chown(open_tmp):
    """Rule: a source's records.jsonl and journal that its user may not write (root's, 0644,
    after a run with sudo, in that user's state_dir) stop ``run`` with exit 78 and one line
    naming the first file, its owner and the ``sudo chown`` of both, before anything is
    opened; doctor run as root finds the same for that user by the files' modes."""
    nobody = pwd.getpwnam("nobody")
    path = _config(open_tmp)
    state = open_tmp / "state"
    state.mkdir()
    os.chown(str(state), nobody.pw_uid, nobody.pw_gid)
    files = [str(state / "records.jsonl"), str(state / "records.jsonl.journal")]
    for f in files:
        with open(f, "w") as out:
            out.write("")
        os.chmod(f, 0o644)
    got = _as_nobody(lambda: _run_quietly(["run", "--config", path]))
    assert got["rc"] == 78, got
    (line,) = [x for x in got["err"].splitlines() if "error:" in x]
    assert ("state_dir: %s is not writable by nobody (owner root, mode 0644); sudo chown "
            "nobody %s %s" % (files[0], files[0], files[1])) in line, line
    assert line.count(path) == 1, line
    assert os.path.getsize(files[0]) == os.path.getsize(files[1]) == 0
    closed = files_closed(files, "nobody")  # doctor as root, judging for the service user
    assert closed and closed.startswith("%s is not writable by nobody" % files[0]), closed


@ROOT_ONLY
def test_an_unreadable_config_is_named_once(open_tmp):
    """Rule: ``run`` of a config its user may not read says so in one line that names the
    file once (it used to read ``PATH: config: PATH: Permission denied``)."""
    path = _config(open_tmp)
    os.chmod(path, 0o600)
    got = _as_nobody(lambda: _run_quietly(["run", "--config", path]))
    assert got["rc"] == 78, got
    (line,) = [x for x in got["err"].splitlines() if "error:" in x]
    assert line.endswith("error: %s: config file: Permission denied" % path), line
    assert line.count(path) == 1, line
