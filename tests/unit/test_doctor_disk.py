"""doctor's state and cache folder checks tell a full disk and a read-only one, each with a fix
that works: an empty probe file is still made on a full disk, and "run as the service user"
does not help a read-only file system."""

from __future__ import annotations

import agent.ops.doctor as doctor
import agent.ops.files as files
from agent.ops.doctor import OK, WARN, Context, check_dirs


def _state(checks):
    return [c for c in checks if c.name == "state dir"][0]


def test_a_full_file_system_is_a_warning_with_free_space_as_the_fix(tmp_path, monkeypatch):
    """Writable but under 1 MiB free (the records' reserve): WARN naming the bytes free."""
    monkeypatch.setattr(files, "free_bytes", lambda folder, as_root=None: 512.0)
    c = _state(check_dirs(Context(state_dir=str(tmp_path), cache_dir=str(tmp_path))))
    assert c.status == WARN
    assert c.detail == "%s: 512 bytes free: records, state and logs cannot be written" % tmp_path
    assert c.fix == "free space there, or pass --state-dir/--cache-dir"


def test_a_read_only_file_system_is_fixed_by_a_remount_not_by_the_service_user(tmp_path,
                                                                                monkeypatch):
    """A probe refused with EROFS: the fix says remount read-write or another folder."""
    monkeypatch.setattr(doctor, "_writable", lambda d: "Read-only file system")
    c = _state(check_dirs(Context(state_dir=str(tmp_path), cache_dir=str(tmp_path))))
    assert c.status == WARN and c.detail.endswith(": Read-only file system")
    assert c.fix == "remount it read-write, or pass --state-dir/--cache-dir"


def test_a_writable_folder_with_room_is_ok(tmp_path):
    """The plain case stays OK."""
    assert _state(check_dirs(Context(state_dir=str(tmp_path), cache_dir=str(tmp_path)))).status == OK


def test_the_room_counted_is_the_service_users_not_roots(tmp_path, monkeypatch):
    """doctor runs as root, the agent as the service user: root's reserved blocks (f_bfree
    beyond f_bavail) are no room for the agent."""
    import os

    class St:
        f_blocks, f_frsize, f_bfree, f_bavail = 1000, 4096, 500, 0

    monkeypatch.setattr(os, "statvfs", lambda folder: St())
    assert files.free_bytes(str(tmp_path), as_root=False) == 0.0
    assert files.free_bytes(str(tmp_path), as_root=True) == 500 * 4096.0
    c = _state(check_dirs(Context(state_dir=str(tmp_path), cache_dir=str(tmp_path))))
    assert c.status == WARN and "0 bytes free" in c.detail
