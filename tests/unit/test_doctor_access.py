"""What the service user may not read or write is a FAIL whose fix gives it to that user.

Rules: a calibration profile the service user may not read (``sudo edge-agent calibrate`` used
to leave it root's, mode 0600) is a FAIL fixed by ``sudo chown USER PATH``, which keeps its
measurements, never "move it away"; ``calibrate`` run as root gives the profile it writes to
the owner of its folder, so the agent running as that user reads it; a state directory the
service user may not write (``run`` exits 78 on it) is a FAIL with the same ``sudo chown``,
not a WARN; a secret key in a folder the agent's user may not enter is refused with the folder
and its fix in the one line ``run`` prints. Doctor judges the service user's access by owner
and mode when it runs as root, and by the system's answer when it runs as that user.

Real users, files and processes: run as root (which the project's test machine is), with
"nobody" as the service user; a check "as the service user" runs in a process forked from the
test and switched to that user (no interpreter start: the one here lives under /root).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile

import pytest

from agent.cli import main
from agent.ops.doctor import FAIL, OK, Context, check_calibration, check_dirs
from engines.demo import DEMO_BUNDLE_DIR

QUICK = ["--seconds", "0.05", "--warmup", "0.02"]  # a calibration of a second or so

try:
    NOBODY = pwd.getpwnam("nobody")
except KeyError:  # pragma: no cover - every Linux test machine has it
    NOBODY = None

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None,
                                reason="needs root and a user 'nobody' to switch to")


@pytest.fixture
def open_dir():
    """A folder under /tmp that every user may enter (pytest's own are root's, mode 0700)."""
    path = tempfile.mkdtemp(prefix="edge-agent-access-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(fn):
    """What ``fn()`` returns (JSON-able), run in a child process switched to user nobody; a
    raised exception comes back as {"error": "Type: text"}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            try:
                out = {"ok": fn()}
            except Exception as exc:
                out = {"error": "%s: %s" % (type(exc).__name__, exc)}
            with os.fdopen(w, "w") as f:
                json.dump(out, f)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _calibration_line(state, user="nobody"):
    (line,) = check_calibration(Context(state_dir=state, user=user))
    return line


def test_calibrate_as_root_gives_the_profile_to_its_folders_owner_and_doctor_reads_it(open_dir):
    """``calibrate`` run as root for a profile in a folder nobody owns writes it nobody's (mode
    0600 kept): doctor, as root and as nobody, finds it readable by the service user."""
    state = os.path.join(open_dir, "state")
    os.mkdir(state)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    assert main(["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", state] + QUICK) == 0
    st = os.stat(os.path.join(state, "calibration.json"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, NOBODY.pw_gid,
                                                                0o600)
    assert _calibration_line(state).status == OK
    assert _as_nobody(lambda: _calibration_line(state).to_json())["ok"]["status"] == OK


def test_calibrate_as_root_in_roots_own_folder_leaves_the_profile_roots(open_dir):
    assert main(["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", open_dir] + QUICK) == 0
    assert os.stat(os.path.join(open_dir, "calibration.json")).st_uid == 0


def test_a_profile_the_service_user_may_not_read_is_given_to_it_not_thrown_away(open_dir):
    """A profile root's, mode 0600, in the service user's state dir: FAIL as root (by owner and
    mode) and as the service user (its read refused), fixed by ``sudo chown nobody PATH``, never
    "move it away"; after that very chown the line is OK, its entries kept."""
    state = os.path.join(open_dir, "state")
    os.mkdir(state)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    assert main(["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", state] + QUICK) == 0
    profile = os.path.join(state, "calibration.json")
    os.chown(profile, 0, 0)  # as an older calibrate run with sudo left it
    as_root = _calibration_line(state)
    assert as_root.status == FAIL
    assert as_root.detail == ("user nobody may not read %s (owner root, mode 0600): a worker "
                              "naming it exits 78" % profile)
    assert as_root.fix == "sudo chown nobody %s, then run doctor as that user" % profile
    as_user = _as_nobody(lambda: _calibration_line(state).to_json())["ok"]
    assert as_user["status"] == FAIL and "move it away" not in as_user["fix"]
    assert as_user["fix"] == "sudo chown nobody %s, then run doctor again" % profile
    os.chown(profile, NOBODY.pw_uid, -1)  # the fix, as given
    fixed = _as_nobody(lambda: _calibration_line(state).to_json())["ok"]
    assert fixed["status"] == OK and "4 entries" in fixed["detail"], fixed


def test_a_profile_that_is_no_profile_is_still_moved_away(open_dir):
    """Only a refused read is given to the user: a file that is not a profile keeps the
    "move it away, then calibrate" fix."""
    with open(os.path.join(open_dir, "calibration.json"), "w") as f:
        f.write("not json\n")
    line = _calibration_line(open_dir, user="root")
    assert line.status == FAIL and line.fix.startswith("move it away, then edge-agent calibrate")


def test_a_state_dir_the_service_user_may_not_write_fails_with_the_chown_that_fixes_it(
        open_dir):
    """Root's state dir (mode 0755): FAIL (run exits 78 on it), not a WARN "Permission
    denied" with "run as the service user", both when doctor runs as root and as that user;
    after ``sudo chown nobody DIR`` it is OK; a folder the user owns was OK all along."""
    state = os.path.join(open_dir, "state")
    os.mkdir(state, 0o755)

    def line():
        return check_dirs(Context(state_dir=state, cache_dir=open_dir, user="nobody"))[0]

    as_root = line()
    assert (as_root.name, as_root.status) == ("state dir", FAIL)
    assert as_root.detail == ("user nobody may not write in %s (owner root, mode 0755): run exits "
                              "78 on it" % state)
    assert as_root.fix == "sudo chown nobody %s, then run doctor as that user" % state
    as_user = _as_nobody(lambda: line().to_json())["ok"]
    assert as_user["status"] == FAIL and as_user["fix"] == ("sudo chown nobody %s, then run "
                                                            "doctor again" % state)
    os.chown(state, NOBODY.pw_uid, -1)  # the fix, as given
    assert line().status == OK
    assert _as_nobody(lambda: line().to_json())["ok"]["status"] == OK


def test_a_state_dir_under_a_folder_the_user_may_not_enter_names_that_folder(open_dir):
    closed = os.path.join(open_dir, "closed")
    os.mkdir(closed, 0o700)
    state = os.path.join(closed, "state")
    os.mkdir(state)
    os.chown(state, NOBODY.pw_uid, -1)
    (line, _) = check_dirs(Context(state_dir=state, cache_dir=open_dir, user="nobody"))
    assert line.status == FAIL and "user nobody may not enter %s (owner root, mode 0700)" % (
        closed) in line.detail
    assert line.fix.startswith("let nobody through %s (sudo chmod o+x %s)" % (closed, closed))


def test_a_secret_key_in_a_folder_the_agent_may_not_enter_names_the_folder_and_its_chown(
        open_dir):
    """``keys generate`` run with sudo makes the key folder root's, mode 0700: the agent's user
    cannot even look at the key, and the refusal (the line ``run`` prints after
    ``secret_key_path:``) names the folder and the ``chown -R`` that lets it in, in one line;
    after it, the key loads."""
    from agent.net.keyfiles import load_secret_key_file
    from agent.net.security import generate_keypair

    keys = os.path.join(open_dir, "keys")
    _, secret = generate_keypair(keys, "w1")
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    got = _as_nobody(lambda: load_secret_key_file(secret) and "loaded")
    uid = NOBODY.pw_uid
    assert got["error"] == (
        "SecurityError: secret key file %s: Permission denied: uid %d may not enter folder %s, "
        "owner uid 0 mode 0700 (run: chown -R %d %s)" % (secret, uid, keys, uid, keys))
    for path in [keys] + [os.path.join(keys, n) for n in os.listdir(keys)]:
        os.chown(path, uid, -1)  # chown -R UID KEYS, as given
    assert _as_nobody(lambda: load_secret_key_file(secret) and "loaded") == {"ok": "loaded"}


def test_doctor_node_keys_gives_the_key_folders_own_fix_not_the_generic_one(open_dir):
    """``doctor --config`` as the service user, keys in a folder ``sudo keys generate`` made:
    the "node keys" FAIL carries run's line with its ``(run: chown -R ...)``, and its fix
    points to that line, not to the generic access fix."""
    from agent.net.security import generate_keypair
    from agent.ops.doctor_node import check_node

    keys = os.path.join(open_dir, "keys")
    _, secret = generate_keypair(keys, "w1")
    peer, _ = generate_keypair(keys, "s1")
    state = os.path.join(open_dir, "state")
    os.mkdir(state)
    os.chown(state, NOBODY.pw_uid, -1)
    config = os.path.join(open_dir, "w1.toml")
    with open(config, "w") as f:
        f.write('node_id = "w1"\nrole = "worker"\nstage = 4\nbundle = "%s"\nstate_dir = "%s"\n'
                'security = "curve"\nsecret_key_path = "%s"\npublic_key_path = "%s"\n'
                'control_bind = "tcp://127.0.0.1:7001"\ndata_bind = "tcp://127.0.0.1:7002"\n'
                '\n[[peers]]\nid = "s1"\nstage = 0\ncontrol_address = "tcp://127.0.0.1:7003"\n'
                'data_address = "tcp://127.0.0.1:7004"\npublic_key = "%s"\n'
                % (DEMO_BUNDLE_DIR, state, secret, secret[:-len("_secret")], peer))
    os.chmod(config, 0o644)
    check_node(config)  # its imports, here: nobody may not read the interpreter's library
    got = _as_nobody(lambda: [c.to_json() for c in check_node(config)[0]])
    assert "ok" in got, got
    checks = got["ok"]
    line = {c["name"]: c for c in checks}["node keys"]
    assert line["status"] == FAIL
    assert line["detail"].endswith("(run: chown -R %d %s)" % (NOBODY.pw_uid, keys))
    assert line["fix"] == "as the line says (docs/deployment.md, Security)"
