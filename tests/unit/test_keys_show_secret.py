"""`edge-agent keys show FILE` of a file that holds a SECRET key under a public key's name (a
NAME.key_secret copied or renamed: the name invites sharing it) says so on stderr, and not to
share it, besides the public key; a real NAME.key, or a NAME.key_secret under its own name,
is shown without that word. Real key files made by `keys generate`."""

from __future__ import annotations

import os
import shutil

import pytest

from agent.cli import main


@pytest.fixture
def pair(tmp_path, capsys):
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "n1"]) == 0
    public = capsys.readouterr().out.strip().splitlines()[-1]
    return tmp_path, public


def _show(capsys, path):
    rc = main(["keys", "show", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", ["X.key", "n1-copy", "n1.pub"])
def test_a_secret_key_under_another_name_is_said_to_be_secret(pair, capsys, name):
    """Rule: a secret key file copied or renamed (to a NAME.key or any name but *_secret) is
    shown with its public key on stdout and, on stderr, a WARNING naming the file as holding
    a SECRET key and saying not to share it."""
    folder, public = pair
    copy = folder / name
    shutil.copy(str(folder / "n1.key_secret"), str(copy))
    os.chmod(str(copy), 0o644)  # as a copy meant for other nodes would be
    rc, out, err = _show(capsys, copy)
    assert rc == 0
    assert out.strip() == public
    (warning,) = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert str(copy) in warning and "SECRET key" in warning and "do not share" in warning


@pytest.mark.parametrize("name", ["n1.key", "n1.key_secret"])
def test_a_key_file_under_its_own_name_shows_no_warning(pair, capsys, name):
    """Rule: the public NAME.key, and the NAME.key_secret named as such, show the public key
    and its fingerprint with no WARNING."""
    folder, public = pair
    rc, out, err = _show(capsys, folder / name)
    assert rc == 0 and out.strip() == public
    assert "fingerprint" in err and "WARNING" not in err and "SECRET" not in err
