"""Where ``keys generate`` and ``install`` write: a bad --dir, --name, --root or --python is one
error line and exit 2, found before anything is written, and nothing is left half-written.

Running as root, a permission cannot be made to fail: an unwritable place is a /proc path and a
folder that cannot be made is one under a regular file.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.unit.test_output_paths import _fails


# --- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("where,why", [
    ("file", "is a file, not a directory"),
    ("/proc/x", "cannot create a directory in /proc"),
])
def test_keys_generate_refuses_a_dir_it_cannot_write(tmp_path, capsys, where, why):
    """``keys generate --dir`` that is a regular file or a place in /proc: one line, exit 2."""
    (tmp_path / "file").write_text("x")
    where = str(tmp_path / where) if where == "file" else where
    _fails(["keys", "generate", "--dir", where, "--name", "w1"], capsys, "--dir", why)


@pytest.mark.parametrize("name", ["a" * 300, "a" * 65, "../w1", ".hidden", "-x", "w 1"])
def test_keys_generate_names_follow_the_node_id_rule(tmp_path, capsys, name):
    """A key name is a node id (check_node_id: 1-64 letters, digits, '.', '_', '-', starting
    with a letter or digit): a 300-character name was an OSError traceback."""
    _fails(["keys", "generate", "--dir", str(tmp_path), "--name=" + name], capsys,
           "--name: must be 1-64 characters")
    assert os.listdir(str(tmp_path)) == []


def test_keys_generate_refuses_a_directory_in_a_key_files_place(tmp_path, capsys):
    """With --force, a directory called NAME.key is found before the secret key is written."""
    (tmp_path / "w1.key").mkdir()
    _fails(["keys", "generate", "--dir", str(tmp_path), "--name", "w1", "--force"], capsys,
           "w1.key is a directory")
    assert os.listdir(str(tmp_path)) == ["w1.key"]


def test_keys_generate_leaves_no_half_pair_when_a_write_fails(tmp_path, capsys, monkeypatch):
    """The secret key is written first: if the public one then cannot be written, the error is
    one line naming --dir and no key file (nor a temporary one) is left."""
    pytest.importorskip("zmq")
    from agent.ops import atomic

    real = atomic._create_temp

    def create(directory, name, perms):
        if name.endswith(".key"):
            raise OSError(28, "No space left on device", name)
        return real(directory, name, perms)

    monkeypatch.setattr(atomic, "_create_temp", create)
    _fails(["keys", "generate", "--dir", str(tmp_path), "--name", "w1"], capsys,
           "--dir: cannot write", "No space left on device")
    assert os.listdir(str(tmp_path)) == []


# --- install ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dry", [True, False])
def test_install_refuses_a_root_that_is_a_file_dry_run_or_not(tmp_path, capsys, dry):
    """``install --root FILE`` was a NotADirectoryError (and the dry run accepted it)."""
    root = tmp_path / "file"
    root.write_text("x")
    _fails(["install", "--root", str(root), "--no-pip", "--no-enable"]
           + (["--dry-run"] if dry else []), capsys, "--root", "is a file, not a directory")


def test_install_refuses_a_file_where_one_of_its_folders_goes(tmp_path, capsys):
    """ROOT/etc/systemd being a file is found before etc/edge-agent and opt/ are made."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "systemd").write_text("x")
    _fails(["install", "--root", str(tmp_path), "--no-pip", "--no-enable"], capsys,
           "etc/systemd is a file, not a directory")
    assert sorted(os.listdir(str(tmp_path / "etc"))) == ["systemd"]


@pytest.mark.parametrize("python,why", [
    ("missing", "No such file or directory"),
    ("/bin/false", "cannot make a virtual environment"),
])
def test_install_checks_python_before_writing_anything(tmp_path, capsys, python, why):
    """A --python that cannot make a venv failed only after etc/ and opt/ were made: it is
    tried first, and the root is left as it was (here: not made at all)."""
    python = str(tmp_path / python) if python == "missing" else python
    root = tmp_path / "root"
    _fails(["install", "--root", str(root), "--no-pip", "--no-enable", "--python", python],
           capsys, "--python", why)
    assert not root.exists()


def test_install_checks_the_package_path_before_writing_anything(tmp_path, capsys):
    """A --package wheel that does not exist is named before anything is made."""
    root = tmp_path / "root"
    _fails(["install", "--root", str(root), "--no-enable", "--python", sys.executable,
            "--package", str(tmp_path / "edge_agent-0-py3-none-any.whl")], capsys,
           "--package", "does not exist")
    assert not root.exists()
