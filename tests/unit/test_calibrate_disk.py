"""Where ``calibrate`` writes its profile, checked before it measures, and a failed write
worded by its cause: a file system with less free space than a write needs is refused before
anything is measured, naming the path and the free space; a full file system (ENOSPC) or a
used-up quota says to free space there (it said to run as the service user); a read-only one
says so once; an error names the option the path came from (``--state-dir`` for
``STATE_DIR/calibration.json``, never a ``--profile`` not given). Real folders, statvfs,
and real write errors; a read-only and a full file system are real tmpfs mounts where this
user may mount them."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from agent.cli import main
from agent.commands import calibrate_checks
from agent.commands.calibrate_checks import free_bytes, write_fault
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.test_doctor_node import QUICK


def _calibrate(capsys, state_dir, *extra):
    capsys.readouterr()
    rc = main(["calibrate", "--bundle", DEMO_BUNDLE_DIR, "--state-dir", str(state_dir),
               "--stages", "1"] + QUICK + list(extra))
    return rc, capsys.readouterr().err


def test_too_little_free_space_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    """Rule: the profile's file system with less free space than the bound is refused (exit
    2) before any engine is measured, naming --state-dir, the profile path and the free
    space; nothing is written. The bound is raised above this file system's real free space
    (statvfs) rather than filling a disk."""
    free = free_bytes(str(tmp_path))
    monkeypatch.setattr(calibrate_checks, "MIN_FREE_BYTES", free + 2 ** 30)
    rc, err = _calibrate(capsys, tmp_path / "state")
    profile = tmp_path / "state" / "calibration.json"
    assert rc == 2, err
    assert ("--state-dir: cannot write the profile %s: the file system holding %s has "
            % (profile, tmp_path / "state")) in err, err
    assert " free, less than the " in err and "free space there (df -h " in err
    assert "measuring" not in err and not profile.exists()


def test_a_full_file_system_says_to_free_space_not_to_change_user():
    """Rule: ENOSPC (a real one: a write to /dev/full) is worded as the file system holding
    the file being full, with "free space there", never the service-user advice."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(OSError) as err:
        with open("/dev/full", "w") as f:
            f.write("x")
            f.flush()
    assert err.value.errno == errno.ENOSPC
    cause, fix = write_fault(err.value, "/var/lib/edge-agent")
    assert cause == "the file system holding /var/lib/edge-agent is full"
    assert fix == "free space there (df -h /var/lib/edge-agent) and calibrate again"
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert "quota" in write_fault(quota, "/x")[0] and "sudo -u" not in write_fault(quota, "/x")[1]


def test_a_directory_at_the_derived_profile_path_names_state_dir(tmp_path, capsys):
    """Rule: without --profile, a fault of STATE_DIR/calibration.json is named by
    --state-dir (it said --profile, an option not given)."""
    (tmp_path / "calibration.json").mkdir()
    rc, err = _calibrate(capsys, tmp_path)
    assert rc == 2 and "--state-dir: %s is a directory" % (tmp_path / "calibration.json") in err
    assert "--profile:" not in err


def _mount_tmpfs(where, options):
    """A real tmpfs mounted at ``where`` with ``options``; skips where this user cannot."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stdout.decode().strip())


@pytest.fixture
def mounts(tmp_path):
    made = []

    def mount(name, options):
        where = tmp_path / name
        _mount_tmpfs(where, options)
        made.append(where)
        return where

    yield mount
    for where in made:
        subprocess.run(["umount", str(where)], check=False)


def test_a_read_only_state_dir_is_named_once_with_its_option(mounts, capsys):
    """Rule: a read-only --state-dir is refused before measuring, in one line naming
    --state-dir and the derived profile path, its cause said once (it said "--profile: ...
    Read-only file system (it is on a read-only file system)")."""
    ro = mounts("ro", "ro,size=1m")
    rc, err = _calibrate(capsys, ro)
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line == ("edge-agent calibrate: error: --state-dir: cannot write the profile %s: %s "
                    "is on a read-only file system; give a --state-dir (or --profile) on a "
                    "writable one" % (ro / "calibration.json", ro)), line


def test_a_nearly_full_file_system_is_refused_before_measuring(mounts, capsys):
    """Rule: a real file system with less than the bound free (a 256 KiB tmpfs) is refused
    before measuring, naming the path and its free space."""
    small = mounts("small", "size=256k")
    rc, err = _calibrate(capsys, small)
    assert rc == 2 and "the file system holding %s has 256.0 KiB free" % small in err, err
    assert not (small / "calibration.json").exists()


def test_a_file_system_that_reports_no_size_is_not_refused(tmp_path, monkeypatch):
    """Rule: where statvfs reports no blocks at all (some FUSE mounts) or fails, the free
    space is unknown (None) and the write probe alone decides: a writable folder there is
    never refused as full."""
    real = os.statvfs(str(tmp_path))
    zero = os.statvfs_result((real.f_bsize, real.f_frsize, 0, 0, 0, 0, 0, 0, 0, 255))
    monkeypatch.setattr(calibrate_checks.os, "statvfs", lambda path: zero)
    assert free_bytes(str(tmp_path)) is None
    calibrate_checks.check_profile_place(str(tmp_path / "calibration.json"), "--profile")

    def fails(path):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(calibrate_checks.os, "statvfs", fails)
    assert free_bytes(str(tmp_path)) is None
