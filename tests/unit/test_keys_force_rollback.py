"""``edge-agent keys generate --force`` puts a new pair in place by two renames: should the
second (the public file's) fail, the secret file already replaced gets its old file back, so
the pair on disk is the old one, whole, and the one line says so; should that fail too, the
line says which file holds which key and where the old secret is kept
(``agent.ops.atomic.write_atomic_all``). The renames' failures are injected into the file
system calls (``os.replace``, ``os.link``); everything else is real files."""

from __future__ import annotations

import errno
import os

import pytest

from agent.cli import main
from agent.net.keyfiles import load_public_key, load_secret_key_file
from agent.ops import atomic


def _fail_calls(monkeypatch, name, calls):
    """Make the ``calls``-th calls (1-based) of ``os.NAME`` fail with EIO; the others run."""
    real = getattr(atomic.os, name)
    seen = []

    def flaky(*a, **kw):
        seen.append(a)
        if len(seen) in calls:
            raise OSError(errno.EIO, "Input/output error")
        return real(*a, **kw)
    monkeypatch.setattr(atomic.os, name, flaky)
    return seen


def _pair(tmp_path):
    """A key pair n1 made as a first `keys generate` makes it: (folder, {path: bytes})."""
    d = str(tmp_path / "keys")
    assert main(["keys", "generate", "--dir", d, "--name", "n1"]) == 0
    files = [os.path.join(d, "n1.key_secret"), os.path.join(d, "n1.key")]
    return d, {p: open(p, "rb").read() for p in files}


def test_a_failed_second_rename_leaves_the_old_pair_whole_and_says_so(tmp_path, capsys,
                                                                     monkeypatch):
    """Rule: with --force, when the public file's rename fails after the secret file's
    succeeded, the old secret file is put back: both files hold the old pair (byte for byte,
    the secret still 0600, its public key the public file's), no other file is left in the
    folder, and the one error line names the file not put in place and that every file is as
    it was; exit 2."""
    d, old = _pair(tmp_path)
    capsys.readouterr()
    _fail_calls(monkeypatch, "replace", {2})
    assert main(["keys", "generate", "--dir", d, "--name", "n1", "--force"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    secret, public = sorted(old, reverse=True)
    assert err == ["edge-agent keys generate: error: --dir: cannot write %s: %s not put in place "
                   "(Input/output error); %s has its old file back: every file is as it was"
                   % (d, public, secret)], err
    assert {p: open(p, "rb").read() for p in old} == old
    assert sorted(os.listdir(d)) == ["n1.key", "n1.key_secret"]
    assert os.stat(secret).st_mode & 0o777 == 0o600
    assert load_secret_key_file(secret)[0] == load_public_key(public)


def test_a_failed_undo_says_which_file_holds_which_key_and_keeps_the_old_secret(
        tmp_path, capsys, monkeypatch):
    """Rule: when putting the old secret file back fails too, the error line says the files do
    not belong together, that the secret file holds the new key and the public file the old
    one, names where the old secret is kept (that file is left, holding it) and how to make a
    pair again."""
    d, old = _pair(tmp_path)
    capsys.readouterr()
    _fail_calls(monkeypatch, "replace", {2, 3})
    assert main(["keys", "generate", "--dir", d, "--name", "n1", "--force"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    secret, public = sorted(old, reverse=True)
    assert len(err) == 1 and "the files do not belong together" in err[0], err
    assert "%s holds the old one" % public in err[0], err
    kept = [n for n in os.listdir(d) if n.startswith(".n1.key_secret.") and n.endswith(".old")]
    assert len(kept) == 1, os.listdir(d)
    assert ("%s holds the new file (its old one kept as %s)"
            % (secret, os.path.join(d, kept[0]))) in err[0], err
    assert err[0].endswith("; make a new pair (--force again) once the folder takes writes")
    assert open(os.path.join(d, kept[0]), "rb").read() == old[secret]
    assert open(public, "rb").read() == old[public]
    assert open(secret, "rb").read() != old[secret]


def test_without_hard_links_the_old_files_are_kept_as_copies_and_put_back(tmp_path,
                                                                          monkeypatch):
    """Rule: on a file system that makes no hard links (os.link refused, EPERM), the old files
    are kept as copies with their permissions, and a failed second rename still leaves the old
    pair in place and no other file."""
    d, old = _pair(tmp_path)
    real_link = atomic.os.link

    def no_links(*a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(atomic.os, "link", no_links)
    _fail_calls(monkeypatch, "replace", {2})
    with pytest.raises(OSError, match="every file is as it was"):
        atomic.write_atomic_all([(p, b"new", 0o600) for p in old])
    monkeypatch.setattr(atomic.os, "link", real_link)
    monkeypatch.undo()
    assert {p: open(p, "rb").read() for p in old} == old
    secret = sorted(old, reverse=True)[0]
    assert os.stat(secret).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(d)) == ["n1.key", "n1.key_secret"]


def test_a_set_with_no_old_files_is_removed_again_and_an_interrupt_still_undoes(tmp_path,
                                                                               monkeypatch):
    """Rule: a target that was not there before is removed again when a later rename fails
    (nothing of the new set is left), and an interrupt (not an OSError) between the renames
    also puts the old file back before it goes on."""
    a, b = str(tmp_path / "a.key_secret"), str(tmp_path / "a.key")
    _fail_calls(monkeypatch, "replace", {2})
    with pytest.raises(OSError, match="a.key_secret removed \\(none was there\\): every file"):
        atomic.write_atomic_all([(a, b"new secret", 0o600), (b, b"new public", 0o644)])
    monkeypatch.undo()
    assert os.listdir(str(tmp_path)) == []
    atomic.write_atomic_all([(a, b"old secret", 0o600), (b, b"old public", 0o644)])
    real = atomic.os.replace
    calls = []

    def interrupted(*args, **kw):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic_all([(a, b"new secret", 0o600), (b, b"new public", 0o644)])
    monkeypatch.undo()
    assert (open(a, "rb").read(), open(b, "rb").read()) == (b"old secret", b"old public")
    assert sorted(os.listdir(str(tmp_path))) == ["a.key", "a.key_secret"]


def test_old_files_a_killed_force_run_kept_are_removed_by_the_next_generate(tmp_path):
    """Rule: a --force run killed between keeping the old files and its end leaves them under
    hidden second names (a replaced secret key among them); the next `keys generate` of that
    name removes them, and only them: another name's kept file and other files stay."""
    d, old = _pair(tmp_path)
    stale = [os.path.join(d, ".n1.key_secret.0123456789abcdef.old"),
             os.path.join(d, ".n1.key.fedcba9876543210.old")]
    for path in stale:
        os.link(os.path.join(d, os.path.basename(path)[1:].rsplit(".", 2)[0]), path)
    others = [os.path.join(d, ".n2.key_secret.0123456789abcdef.old"), os.path.join(d, "notes")]
    for path in others:
        open(path, "w").close()
    assert main(["keys", "generate", "--dir", d, "--name", "n1", "--force"]) == 0
    assert not any(os.path.exists(p) for p in stale)
    assert all(os.path.exists(p) for p in others)
    assert open(os.path.join(d, "n1.key_secret"), "rb").read() != old[os.path.join(
        d, "n1.key_secret")]
