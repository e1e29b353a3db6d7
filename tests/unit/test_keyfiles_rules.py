"""Key-file rules on real files: no message shows a value that may be a secret key, a key
file's two lines must belong together, a symbolic link is told, an open folder is refused."""

from __future__ import annotations

import grp
import os
import pwd

import pytest
import zmq

from agent.config.node import parse_config
from agent.net.keyfiles import SecurityError, load_secret_key_file
from agent.net.keyfile_create import generate_keypair
from agent.net.security import load_public_key, security_from_config


def _secret_of(secret_file: str) -> str:
    return load_secret_key_file(secret_file)[1].decode("ascii")


def _config(tmp_path, peer_key: str, **extra):
    base = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": "b", "state_dir": "st",
            "security": "curve", "secret_key_path": "w1.key_secret", "public_key_path": "w1.key",
            "control_bind": "tcp://127.0.0.1:5551", "data_bind": "tcp://127.0.0.1:5552",
            "peers": [{"id": "slow", "stage": 0, "control_address": "tcp://127.0.0.1:5561",
                       "data_address": "tcp://127.0.0.1:5562", "public_key": peer_key}]}
    base.update(extra)
    return parse_config(base, str(tmp_path))


@pytest.fixture
def keys(tmp_path):
    """w1's pair in tmp_path (0700), slow's pair in tmp_path/fleet with its public key."""
    os.chmod(str(tmp_path), 0o700)
    generate_keypair(str(tmp_path), "w1")
    fleet = tmp_path / "fleet"
    fleet.mkdir(mode=0o755)
    os.chmod(str(fleet), 0o755)
    slow_pub, slow_sec = generate_keypair(str(fleet), "slow")
    return load_public_key(slow_pub).decode("ascii"), _secret_of(slow_sec)


def test_an_inline_secret_given_as_secret_key_path_is_refused_without_showing_it(tmp_path, keys):
    """Rule: a secret_key_path that is a 40-character z85 key (not a file) is named as an
    inline key, and the value is not in the message."""
    secret = _secret_of(str(tmp_path / "w1.key_secret"))
    cfg = _config(tmp_path, keys[0], secret_key_path=secret)
    with pytest.raises(SecurityError) as err:
        security_from_config(cfg)
    text = str(err.value)
    assert "looks like an inline key" in text and "NAME.key_secret" in text
    assert secret not in text and secret[:20] not in text and secret[-20:] not in text
    with pytest.raises(SecurityError) as err:  # as given (not config-relative) too
        load_secret_key_file(secret)
    assert "inline key" in str(err.value) and secret not in str(err.value)


@pytest.mark.parametrize("secret", [
    "0123456789abcdefghij//klmnopqrstuvwxyzAB",  # "//": a path would fold it into one "/"
    "0123456789abcdefghij/./lmnopqrstuvwxyzAB",  # "/./": dropped from a path
    "0123456789abcdefghi/../klmnopqrstuvwxyzA",  # "/../": takes the folder before with it
    "0123456789abcdefghijklmnopqrstuvwxyzABC/",  # a final "/": dropped from a path
], ids=["double-slash", "dot", "dot-dot", "trailing-slash"])
def test_an_inline_key_a_path_would_fold_is_still_refused_without_showing_it(tmp_path, keys,
                                                                              secret):
    """Rule: a secret_key_path given as a 40-character z85 key whose "/"s a path would fold
    ("//", "/./", "/../", a final "/") is named as an inline key too, never shown in part."""
    assert len(secret) == 40
    cfg = _config(tmp_path, keys[0], secret_key_path=secret)
    with pytest.raises(SecurityError) as err:
        security_from_config(cfg)
    text = str(err.value)
    assert "looks like an inline key" in text, text
    assert not any(part in text for part in secret.split("/") if len(part) > 4), text


def test_a_missing_key_file_is_still_named(tmp_path, keys):
    """Rule: a secret_key_path that is a file name, not a key, is shown when it is missing."""
    cfg = _config(tmp_path, keys[0], secret_key_path="gone.key_secret")
    with pytest.raises(SecurityError, match="gone.key_secret"):
        security_from_config(cfg)


def test_a_peer_key_that_is_that_peers_secret_is_refused_as_such_never_shown(tmp_path, keys):
    """Rule: a peer's public_key that is the SECRET key of the peer's known public key (in
    allowed_keys_dir) is refused as an exposed secret, never called stale, never shown."""
    slow_pub, slow_sec = keys
    cfg = _config(tmp_path, slow_sec, allowed_keys_dir="fleet")
    with pytest.raises(SecurityError) as err:
        security_from_config(cfg)
    text = str(err.value)
    assert "peers[0].public_key (peer 'slow') holds slow's SECRET key" in text
    assert "re-key slow" in text and "stale" not in text and slow_sec not in text


def test_a_peer_key_that_is_this_nodes_own_secret_is_refused(tmp_path, keys):
    """Rule: this node's own secret pasted as a peer's public_key is named as this node's."""
    own_sec = _secret_of(str(tmp_path / "w1.key_secret"))
    with pytest.raises(SecurityError) as err:
        security_from_config(_config(tmp_path, own_sec))
    assert "this node's own SECRET key" in str(err.value) and own_sec not in str(err.value)


def test_a_stale_peer_key_still_shows_both_public_keys(tmp_path, keys):
    """Rule: two different public keys for one peer are still reported with both values."""
    other = zmq.curve_keypair()[0].decode("ascii")
    with pytest.raises(SecurityError) as err:
        security_from_config(_config(tmp_path, other, allowed_keys_dir="fleet"))
    assert "stale" in str(err.value) and other in str(err.value) and keys[0] in str(err.value)


def test_a_key_file_whose_secret_is_not_its_publics_is_refused_naming_the_file(tmp_path, keys):
    """Rule: a key file whose secret-key line does not derive its public-key line is refused
    (the node would be cut off without a word), naming the file and no key value."""
    good = tmp_path / "w1.key_secret"
    other_pub, other_sec = zmq.curve_keypair()
    text = good.read_text()
    own_sec = _secret_of(str(good))
    mixed = tmp_path / "mixed.key_secret"
    mixed.write_text(text.replace(own_sec, other_sec.decode("ascii")))
    os.chmod(str(mixed), 0o600)
    with pytest.raises(SecurityError) as err:
        load_secret_key_file(str(mixed))
    message = str(err.value)
    assert str(mixed) in message and "does not belong to its public-key line" in message
    assert other_sec.decode("ascii") not in message and "\n" not in message
    with pytest.raises(SecurityError, match="does not belong"):
        security_from_config(_config(tmp_path, keys[0], secret_key_path="mixed.key_secret"))


def test_a_symlinked_secret_key_is_accepted_with_one_warning(tmp_path, keys, caplog):
    """Rule: a symbolic link to a 0600 secret key in a closed folder is accepted, and told
    (WARNING naming the link and its target) once per file."""
    link = tmp_path / "link.key_secret"
    os.symlink(str(tmp_path / "w1.key_secret"), str(link))
    with caplog.at_level("WARNING", logger="agent.net.security"):
        assert load_secret_key_file(str(link)) == load_secret_key_file(
            str(tmp_path / "w1.key_secret"))
        load_secret_key_file(str(link))
    told = [r.getMessage() for r in caplog.records if "symbolic link" in r.getMessage()]
    assert len(told) == 1 and str(link) in told[0] and "w1.key_secret" in told[0]


@pytest.mark.parametrize("mode", [0o777, 0o707])
def test_a_secret_key_in_a_folder_others_may_write_is_refused(tmp_path, keys, mode):
    """Rule: a secret key whose folder others may write (they could swap it) is refused, as a
    key others may read is, with the chmod that fixes it."""
    folder = tmp_path / "open"
    folder.mkdir()
    _, secret_file = generate_keypair(str(folder), "w1")
    os.chmod(str(folder), mode)
    with pytest.raises(SecurityError) as err:
        load_secret_key_file(secret_file)
    assert "others may write" in str(err.value) and "chmod go-w %s" % folder in str(err.value)


def test_a_symlink_whose_target_folder_is_open_is_refused(tmp_path, keys):
    """Rule: a symbolic link is checked at its target's folder too."""
    folder = tmp_path / "open"
    folder.mkdir()
    _, secret_file = generate_keypair(str(folder), "w1")
    os.chmod(str(folder), 0o777)
    link = tmp_path / "via.key_secret"
    os.symlink(secret_file, str(link))
    with pytest.raises(SecurityError, match="others may write"):
        load_secret_key_file(str(link))


def test_a_sticky_folder_and_a_closed_one_are_accepted(tmp_path, keys):
    """Rule: a sticky folder (like /tmp: nobody else can rename or remove the file) is
    accepted, and so is a folder only its owner writes."""
    folder = tmp_path / "sticky"
    folder.mkdir()
    _, secret_file = generate_keypair(str(folder), "w1")
    os.chmod(str(folder), 0o1777)
    assert load_secret_key_file(secret_file)
    os.chmod(str(folder), 0o755)
    assert load_secret_key_file(secret_file)


def test_a_folder_writable_by_a_shared_group_is_refused(tmp_path, keys):
    """Rule: group write is refused unless the group is the key owner's own private group
    (its primary group with no other member)."""
    me = pwd.getpwuid(os.geteuid())
    shared = [g for g in grp.getgrall() if g.gr_gid != me.pw_gid]
    if not shared:
        pytest.skip("no group other than the user's own")
    folder = tmp_path / "grp"
    folder.mkdir()
    _, secret_file = generate_keypair(str(folder), "w1")
    if os.geteuid() != 0:
        pytest.skip("giving a folder a group the user is not in needs root")
    os.chown(str(folder), -1, shared[0].gr_gid)
    os.chmod(str(folder), 0o770)
    with pytest.raises(SecurityError, match="which group %s" % shared[0].gr_name):
        load_secret_key_file(secret_file)
