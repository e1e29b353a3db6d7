"""CURVE keys as a field engineer meets them: a peer's key that disagrees with that peer's
NAME.key in allowed_keys_dir stops the start-up with one line naming both (a stale key fails
every handshake with that peer without a word), and a refused handshake's log line says where
an allowed key goes."""

from __future__ import annotations

import logging
import os
import time

import pytest
import zmq

from agent.config.node import parse_config
from agent.net.security import SecurityError, generate_keypair, load_public_key, \
    security_from_config


def _fleet(tmp_path):
    """Keys of w1 (this node), s1 (its peer) and the fleet folder with both public keys."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    os.chmod(str(fleet), 0o755)
    generate_keypair(str(tmp_path), "w1")
    s1_pub, _ = generate_keypair(str(tmp_path), "s1")
    for name in ("w1", "s1"):
        (fleet / (name + ".key")).write_bytes((tmp_path / (name + ".key")).read_bytes())
        os.chmod(str(fleet / (name + ".key")), 0o644)
    return load_public_key(s1_pub).decode()


def _config(tmp_path, peer_key):
    return parse_config({
        "node_id": "w1", "role": "worker", "stage": 1, "bundle": "b", "state_dir": "st",
        "control_bind": "tcp://127.0.0.1:5551", "data_bind": "tcp://127.0.0.1:5552",
        "security": "curve", "secret_key_path": "w1.key_secret", "public_key_path": "w1.key",
        "allowed_keys_dir": "fleet",
        "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5561",
                   "data_address": "tcp://127.0.0.1:5562", "public_key": peer_key}]},
        str(tmp_path))


def test_a_peer_key_that_is_not_the_peers_file_in_allowed_keys_dir_is_refused(tmp_path):
    """peers[i].public_key and allowed_keys_dir/ID.key must be one key (after re-keying a node
    on one side only, one of them is stale): the start-up error names both and the file."""
    right = _fleet(tmp_path)
    assert security_from_config(_config(tmp_path, right)).allowed_public_keys
    stale = zmq.curve_keypair()[0].decode()
    with pytest.raises(SecurityError) as info:
        security_from_config(_config(tmp_path, stale))
    text = str(info.value)
    assert text.startswith("peers[0].public_key (peer 's1') is %s but allowed_keys_dir holds %s"
                           % (stale, right))
    assert str(tmp_path / "fleet" / "s1.key") in text and "\n" not in text


def test_a_peer_without_a_file_in_allowed_keys_dir_is_not_compared(tmp_path):
    """Only a peer with an ID.key file is compared: a fleet folder need not list every peer."""
    right = _fleet(tmp_path)
    os.unlink(str(tmp_path / "fleet" / "s1.key"))
    sec = security_from_config(_config(tmp_path, right))
    assert right.encode() in sec.allowed_public_keys


def test_a_refused_handshake_is_logged_with_where_the_key_goes(tmp_path, caplog):
    """A node whose key is on no allow-list is refused on a real CURVE socket; the WARNING line
    names its key, the allowed_keys_dir to put its NAME.key in, and that the refused node must
    be restarted."""
    right = _fleet(tmp_path)
    sec = security_from_config(_config(tmp_path, right))
    ctx = zmq.Context()
    router = dealer = None
    caplog.set_level(logging.WARNING, logger="agent.net.security")
    try:
        sec.start(ctx)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        sec.apply_server(router)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        stranger_pub, stranger_sec = zmq.curve_keypair()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.CURVE_SERVERKEY, sec.public_key)
        dealer.setsockopt(zmq.CURVE_PUBLICKEY, stranger_pub)
        dealer.setsockopt(zmq.CURVE_SECRETKEY, stranger_sec)
        dealer.connect("tcp://127.0.0.1:%d" % port)
        deadline = time.monotonic() + 30.0
        while "handshake refused" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for sock in (dealer, router):
            if sock is not None:
                sock.close()
        sec.stop()
        ctx.term()
    lines = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert lines, caplog.text
    assert stranger_pub.decode() in lines[0]
    assert "put its NAME.key in allowed_keys_dir %s" % (tmp_path / "fleet") in lines[0]
    assert "restart this agent; the refused node dials again" in lines[0]


def test_keys_generate_force_says_what_the_old_key_leaves_behind(tmp_path, capsys):
    """Replacing a pair with --force says where the new public key must go and in which order
    to restart; the last line is still the new public key, and a first pair says nothing of
    it."""
    from agent.cli import main

    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "w1"]) == 0
    assert "replaced" not in capsys.readouterr().out
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "w1", "--force"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("replaced the old pair: put the new public key in every peer's "
                               "[[peers]] public_key and allowed_keys_dir") for line in out)
    assert out[-1] == load_public_key(str(tmp_path / "w1.key")).decode()


def test_a_peers_key_file_given_relative_is_read_from_the_configs_folder(tmp_path,
                                                                        monkeypatch):
    """Rule: a peer's ``public_key`` naming a key file by a relative path is taken from the
    config's folder, as every other path in it (it was looked for from the current folder:
    under systemd, ``/``); a z85 key stays a key."""
    z85 = _fleet(tmp_path)
    monkeypatch.chdir("/")
    cfg = _config(tmp_path, "fleet/s1.key")
    assert cfg.peers[0].public_key == str(tmp_path / "fleet" / "s1.key")
    assert load_public_key(cfg.peers[0].public_key).decode() == z85
    security_from_config(cfg)  # the file and the allow-list agree
    assert _config(tmp_path, z85).peers[0].public_key == z85
