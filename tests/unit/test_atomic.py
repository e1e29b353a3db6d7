"""The one atomic write: old or new file, never torn; no temporary files left; unique temporary
names; permissions as asked or as they were; the durable path fsyncs file and directory."""

import json
import os
import subprocess
import sys
import threading

import pytest

from agent.ops import atomic
from agent.ops.atomic import atomic_open, write_atomic


def _read(path):
    with open(str(path), "rb") as f:
        return f.read()


def _mode(path):
    return os.stat(str(path)).st_mode & 0o777


def test_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    """Text and bytes both replace the target; the folder holds only the target afterwards."""
    path = str(tmp_path / "stats.json")
    write_atomic(path, "first\n")
    write_atomic(path, b"\x00second")
    assert _read(path) == b"\x00second"
    write_atomic(path, "d\u00e9j\u00e0 vu")
    assert _read(path) == "d\u00e9j\u00e0 vu".encode("utf-8")
    assert os.listdir(str(tmp_path)) == ["stats.json"]


def test_error_while_writing_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    """An exception inside the block leaves the target untouched and no temporary file."""
    path = str(tmp_path / "bundle.json")
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half of the new")
            raise RuntimeError("writer died")
    assert _read(path) == b"old"
    assert os.listdir(str(tmp_path)) == ["bundle.json"]


def test_failed_rename_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    """When the rename itself fails (full disk, permissions) the old file stays, no temp left."""
    path = str(tmp_path / "state.json")
    write_atomic(path, "old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomic(path, "new")
    monkeypatch.undo()
    assert _read(path) == b"old"
    assert os.listdir(str(tmp_path)) == ["state.json"]


def test_files_written_together_are_all_staged_before_any_replaces_its_target(tmp_path):
    """write_atomic_all writes every temporary before the first rename: an error in a later
    file (here its data is not text or bytes) leaves every earlier target as it was and no
    temporary; without an error all are replaced, each with the permissions asked for."""
    from agent.ops.atomic import write_atomic_all

    a, b = str(tmp_path / "a.key_secret"), str(tmp_path / "a.key")
    write_atomic(a, "old secret", perms=0o600)
    write_atomic(b, "old public", perms=0o644)
    with pytest.raises(TypeError):
        write_atomic_all([(a, "new secret", 0o600), (b, 12345, 0o644)])
    assert (_read(a), _read(b)) == (b"old secret", b"old public")
    assert sorted(os.listdir(str(tmp_path))) == ["a.key", "a.key_secret"]
    write_atomic_all([(a, b"new secret", 0o600), (b, "new public", 0o644)])
    assert (_read(a), _read(b)) == (b"new secret", b"new public")
    assert (_mode(a), _mode(b)) == (0o600, 0o644)
    assert sorted(os.listdir(str(tmp_path))) == ["a.key", "a.key_secret"]


def test_only_w_and_wb_modes_are_accepted(tmp_path):
    """Appending cannot be atomic: any mode but "w"/"wb" is refused before touching the disk."""
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(str(tmp_path / "x"), "a"):
            pass
    assert os.listdir(str(tmp_path)) == []


def test_concurrent_writers_of_one_path_never_share_a_temporary_name(tmp_path, monkeypatch):
    """Threads writing the same path at once each get their own temporary file."""
    path = str(tmp_path / "plan")
    names = []
    real_open = os.open

    def recording_open(name, flags, mode=0o777, *args, **kwargs):
        if str(name).endswith(".tmp"):
            names.append(str(name))
        return real_open(name, flags, mode, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", recording_open)
    start = threading.Barrier(8)

    def writer(i):
        start.wait()
        for k in range(25):
            write_atomic(path, ("writer %d round %d\n" % (i, k)) * 1000, durable=False)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == 8 * 25 and len(set(names)) == len(names)
    text = _read(path).decode()
    assert len(set(text.splitlines())) == 1 and len(text.splitlines()) == 1000
    assert os.listdir(str(tmp_path)) == ["plan"]


_WRITER = """
import json, sys
from agent.ops.atomic import write_atomic
path, me = sys.argv[1], int(sys.argv[2])
for k in range(60):
    write_atomic(path, json.dumps({"writer": me, "round": k, "pad": "x" * 200000}))
"""


def test_processes_writing_one_path_leave_a_whole_file_readers_never_see_torn(tmp_path):
    """Several processes (agents sharing a cache folder) rewrite one path while a reader reads
    it: every read parses as one writer's whole document; no process fails; no temp is left."""
    path = str(tmp_path / "shared.json")
    write_atomic(path, json.dumps({"writer": -1, "round": 0, "pad": ""}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path, str(i)], env=env)
             for i in range(4)]
    reads = 0
    while any(p.poll() is None for p in procs):
        doc = json.loads(_read(path).decode())
        assert doc["writer"] in range(-1, 4) and doc["pad"] in ("", "x" * 200000)
        reads += 1
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert json.loads(_read(path).decode())["round"] == 59
    assert reads > 0 and os.listdir(str(tmp_path)) == ["shared.json"]


def test_permissions_asked_for_are_applied_whatever_the_umask(tmp_path):
    """``perms`` is applied exactly: a public key stays 0644 under umask 077, a secret stays
    0600 under umask 000; the process umask is left as it was."""
    old = os.umask(0o077)
    try:
        write_atomic(str(tmp_path / "k.key"), "public", perms=0o644)
        assert os.umask(0o000) == 0o077
        write_atomic(str(tmp_path / "k.key_secret"), "secret", perms=0o600)
        assert os.umask(0o022) == 0o000
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k.key") == 0o644
    assert _mode(tmp_path / "k.key_secret") == 0o600


def test_replacing_a_file_keeps_its_permissions_and_a_new_file_gets_opens_default(tmp_path):
    """Without ``perms`` a rewrite keeps the mode the file had (an admin's chmod survives); a new
    file gets what ``open`` gives (0o666 less the umask)."""
    old = os.umask(0o022)
    try:
        path = str(tmp_path / "report.json")
        write_atomic(path, "{}")
        assert _mode(path) == 0o644
        os.chmod(path, 0o640)
        write_atomic(path, "{\"runs\": []}")
        assert _mode(path) == 0o640
        os.umask(0o002)
        write_atomic(str(tmp_path / "other.json"), "{}")
        assert _mode(tmp_path / "other.json") == 0o664
    finally:
        os.umask(old)


def _record_fsyncs(monkeypatch):
    """Replace os.fsync by one that records what each fd is (file path or directory)."""
    synced = []
    real = os.fsync

    def fsync(fd):
        target = os.readlink("/proc/self/fd/%d" % fd)
        synced.append((target, os.path.isdir(target)))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_durable_write_fsyncs_the_data_then_the_directory(tmp_path, monkeypatch):
    """Durable (the default): the temporary file is fsynced before the rename, the directory
    after it, so the new name survives a power cut."""
    synced = _record_fsyncs(monkeypatch)
    path = str(tmp_path / "calibration.json")
    write_atomic(path, "{}")
    assert len(synced) == 2
    (file_target, file_is_dir), (dir_target, dir_is_dir) = synced
    assert not file_is_dir and os.path.basename(file_target).endswith(".tmp")
    assert os.path.basename(file_target).startswith(".calibration.json.")
    assert dir_is_dir and os.path.samefile(dir_target, str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_non_durable_write_skips_both_fsyncs_but_is_still_atomic(tmp_path, monkeypatch):
    """``durable=False`` (files rewritten every few seconds) does no fsync at all, and still
    replaces the file whole with no temporary file left."""
    synced = _record_fsyncs(monkeypatch)
    path = str(tmp_path / "stats.json")
    write_atomic(path, "{}", durable=False)
    assert synced == [] and _read(path) == b"{}"
    assert os.listdir(str(tmp_path)) == ["stats.json"]
