"""A new key pair (``keys generate`` without ``--force``) goes only where no file is.

Each file is written whole to a temporary and hard-linked to its name, secret first: a name
taken, also by another run after the first look, refuses the pair with the "already exists"
line; the run then removes what it linked itself (a file that is still its temporary's inode)
and nothing else, and leaves no temporary. The races themselves are in
tests/integration/test_keys_race.py; here each outcome is set up with real files.
"""

from __future__ import annotations

import errno
import os

import pytest

from agent.cli import main
from agent.net import keyfile_create, keyfiles
from agent.net.keyfile_create import generate_keypair
from agent.net.keyfiles import SecurityError, load_secret_key_file

pytest.importorskip("zmq")


def _pair(tmp_path, name="n1"):
    """A new pair's (path, data, perms), as generate_keypair hands it on, from a real pair."""
    folder = tmp_path / "made"
    public_file, secret_file = generate_keypair(str(folder), name)
    with open(secret_file, "rb") as s, open(public_file, "rb") as p:
        return [(str(tmp_path / (name + ".key_secret")), s.read(), 0o600),
                (str(tmp_path / (name + ".key")), p.read(), 0o644)]


def _listing(tmp_path):
    return sorted(n for n in os.listdir(str(tmp_path)) if n != "made")


def test_a_public_key_file_already_there_refuses_the_pair_and_its_secret_is_taken_back(
        tmp_path):
    """The secret is linked first; the public name is taken: the secret this run linked is
    removed again, the other file is kept byte for byte, and the error names it."""
    pair = _pair(tmp_path)
    (tmp_path / "n1.key").write_bytes(b"another run's public key\n")
    with pytest.raises(SecurityError, match=r"n1\.key already exists; pass --force"):
        keyfile_create._link_new_pair(pair)
    assert _listing(tmp_path) == ["n1.key"]
    assert (tmp_path / "n1.key").read_bytes() == b"another run's public key\n"


def test_a_secret_key_file_already_there_is_kept_and_no_public_key_is_written(tmp_path):
    pair = _pair(tmp_path)
    (tmp_path / "n1.key_secret").write_bytes(b"another run's secret\n")
    inode = os.stat(str(tmp_path / "n1.key_secret")).st_ino
    with pytest.raises(SecurityError, match=r"n1\.key_secret already exists"):
        keyfile_create._link_new_pair(pair)
    assert _listing(tmp_path) == ["n1.key_secret"]
    assert os.stat(str(tmp_path / "n1.key_secret")).st_ino == inode


def test_a_secret_replaced_by_another_run_before_the_public_fails_is_not_removed(
        tmp_path, monkeypatch):
    """Between this run's two links another run (with --force) puts its own secret in place
    and takes the public name: the secret there is no longer this run's inode, so it stays."""
    pair = _pair(tmp_path)
    real_link = os.link

    def link(src, dst):
        if dst.endswith(".key"):  # the other run, at this moment: real files, really replaced
            (tmp_path / "other").write_bytes(b"the other run's secret\n")
            os.replace(str(tmp_path / "other"), str(tmp_path / "n1.key_secret"))
            (tmp_path / "n1.key").write_bytes(b"the other run's public key\n")
        return real_link(src, dst)

    monkeypatch.setattr(keyfile_create.os, "link", link)
    with pytest.raises(SecurityError, match=r"n1\.key already exists"):
        keyfile_create._link_new_pair(pair)
    assert _listing(tmp_path) == ["n1.key", "n1.key_secret"]
    assert (tmp_path / "n1.key_secret").read_bytes() == b"the other run's secret\n"


def test_a_file_system_without_hard_links_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Where the file system refuses hard links (EPERM, as FAT does) the pair is refused with
    what to do instead, and neither a key file nor a temporary is left."""
    pair = _pair(tmp_path)

    def link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(keyfile_create.os, "link", link)
    with pytest.raises(SecurityError, match="makes no hard links .*pass --force"):
        keyfile_create._link_new_pair(pair)
    assert _listing(tmp_path) == []


def test_keys_generate_refused_by_an_existing_file_exits_2_and_removes_nothing(tmp_path,
                                                                             capsys):
    """``keys generate`` into a folder holding NAME.key_secret only: exit 2 with one line, the
    file kept, no public key written (a refused run used to remove the files it had found
    missing when it started, another run's fresh pair among them)."""
    (tmp_path / "n1.key_secret").write_bytes(b"kept\n")
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "n1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].endswith("n1.key_secret already exists; pass --force to "
                                             "replace it")
    assert sorted(os.listdir(str(tmp_path))) == ["n1.key_secret"]
    assert (tmp_path / "n1.key_secret").read_bytes() == b"kept\n"


def test_a_new_pair_is_whole_with_its_modes_and_belongs_together(tmp_path):
    public_file, secret_file = generate_keypair(str(tmp_path), "n1")
    assert sorted(os.listdir(str(tmp_path))) == ["n1.key", "n1.key_secret"]
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    assert os.stat(public_file).st_mode & 0o777 == 0o644
    assert os.stat(secret_file).st_nlink == 1  # the temporary's name is gone
    assert load_secret_key_file(secret_file)[0] == keyfiles.load_public_key(public_file)
