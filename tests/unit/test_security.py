"""Key files: zmq certificate format, safe permissions enforced, allow-list parsing, modes."""

import os
import stat
from types import SimpleNamespace

import pytest
import zmq.auth

from agent.cli import main
from agent.net.security import (
    CurveSecurity,
    NoSecurity,
    SecurityError,
    generate_keypair,
    load_allowed_keys,
    load_public_key,
    load_secret_key_file,
    security_from_config,
)


def test_generated_files_are_readable_by_pyzmq_and_have_safe_modes(tmp_path):
    public_file, secret_file = generate_keypair(str(tmp_path), "w1")
    assert public_file.endswith("w1.key") and secret_file.endswith("w1.key_secret")
    pub, sec = zmq.auth.load_certificate(secret_file)
    pub2, none = zmq.auth.load_certificate(public_file)
    assert pub == pub2 and sec is not None and none is None
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    assert os.stat(public_file).st_mode & 0o777 == 0o644
    assert zmq.auth.load_certificates(str(tmp_path)) == {pub: True}
    assert load_secret_key_file(secret_file) == (pub, sec)


def test_generate_refuses_to_overwrite_without_force(tmp_path):
    generate_keypair(str(tmp_path), "w1")
    with pytest.raises(SecurityError, match="--force"):
        generate_keypair(str(tmp_path), "w1")
    old = load_public_key(str(tmp_path / "w1.key"))
    generate_keypair(str(tmp_path), "w1", overwrite=True)
    assert load_public_key(str(tmp_path / "w1.key")) != old


def _fail_second_key_write(monkeypatch, where, created_modes):
    """Inject a full disk at the second key file of a pair (the public one): when its
    temporary is created (``create``) or when its data is synced (``sync``). The modes the
    temporaries had when created go to ``created_modes``."""
    from agent.ops import atomic

    real_create, real_fsync = atomic._create_temp, atomic.os.fsync

    def create(directory, name, perms):
        if where == "create" and name.endswith(".key"):
            raise OSError(28, "No space left on device")
        fd, tmp = real_create(directory, name, perms)
        created_modes[name] = os.stat(tmp).st_mode & 0o777
        return fd, tmp

    files_synced = []

    def fsync(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode):  # a file's data, not a folder's entries
            files_synced.append(fd)
            if where == "sync" and len(files_synced) == 2:
                raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(atomic, "_create_temp", create)
    monkeypatch.setattr(atomic.os, "fsync", fsync)


@pytest.mark.parametrize("where", ["create", "sync"])
def test_a_replacement_that_fails_at_the_second_key_file_keeps_the_old_pair(
        tmp_path, monkeypatch, where):
    """generate_keypair(overwrite=True) writes both key files to temporaries before moving
    either into place: a write that fails at the public (second) file leaves the old secret and
    public files byte for byte, no temporary behind, and the secret's temporary was 0600 from
    its creation (it used to replace the secret first: a new secret beside the old public)."""
    public_file, secret_file = generate_keypair(str(tmp_path), "w1")
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(str(tmp_path))}
    created = {}
    _fail_second_key_write(monkeypatch, where, created)
    with pytest.raises(OSError, match="No space left on device"):
        generate_keypair(str(tmp_path), "w1", overwrite=True)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(str(tmp_path))} == before
    assert created["w1.key_secret"] == 0o600
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    assert load_secret_key_file(secret_file)[0] == load_public_key(public_file)
    monkeypatch.undo()
    generate_keypair(str(tmp_path), "w1", overwrite=True)  # a replacement that works: a new pair
    assert load_secret_key_file(secret_file)[0] == load_public_key(public_file)
    assert (tmp_path / "w1.key").read_bytes() != before["w1.key"]
    assert sorted(os.listdir(str(tmp_path))) == ["w1.key", "w1.key_secret"]
    assert os.stat(secret_file).st_mode & 0o777 == 0o600


def test_files_from_zmq_create_certificates_are_accepted(tmp_path):
    pub_file, sec_file = zmq.auth.create_certificates(str(tmp_path), "peer")
    os.chmod(sec_file, 0o400)
    pub, _ = load_secret_key_file(sec_file)
    assert load_public_key(pub_file) == pub


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_key_readable_by_others_is_refused(tmp_path, mode):
    _, secret_file = generate_keypair(str(tmp_path), "w1")
    os.chmod(secret_file, mode)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_secret_key_file(secret_file)


def test_secret_key_owned_by_another_user_is_refused(tmp_path):
    _, secret_file = generate_keypair(str(tmp_path), "w1")
    from agent.net.security import check_secret_key_permissions
    with pytest.raises(SecurityError, match="owned by uid"):
        check_secret_key_permissions(secret_file, uid=os.geteuid() + 1)


def test_public_file_used_as_secret_is_refused(tmp_path):
    public_file, _ = generate_keypair(str(tmp_path), "w1")
    os.chmod(public_file, 0o600)
    with pytest.raises(SecurityError, match="no secret-key"):
        load_secret_key_file(public_file)


def test_allow_list_entries_key_string_file_and_directory(tmp_path):
    d = tmp_path / "peers"
    d.mkdir()
    os.chmod(str(d), 0o755)
    a, _ = generate_keypair(str(d), "a")
    b, _ = generate_keypair(str(d), "b")
    key_a, key_b = load_public_key(a), load_public_key(b)
    assert sorted(load_allowed_keys("peers", base_dir=str(tmp_path))) == sorted([key_a, key_b])
    assert load_allowed_keys(key_a.decode()) == [key_a]
    assert load_allowed_keys(b) == [key_b]
    with pytest.raises(SecurityError, match="no key file .*missing.key"):
        load_allowed_keys("peers/missing.key", base_dir=str(tmp_path))


def test_allow_list_writable_by_others_is_refused(tmp_path):
    """Whoever can write the allow-list can let any key in."""
    a, _ = generate_keypair(str(tmp_path), "a")
    os.chmod(a, 0o666)
    with pytest.raises(SecurityError, match="writable by group or others"):
        load_allowed_keys(a)


def test_security_modes_come_from_the_node_config_with_clear_errors(tmp_path, caplog):
    """curve: own keypair plus one allowed key per peer; none: plain sockets with a warning;
    another mode, curve without a secret key, or curve with no allowed key: a clear error."""
    _, secret_file = generate_keypair(str(tmp_path), "me")
    peer_public, _ = generate_keypair(str(tmp_path), "peer")

    def cfg(**over):
        base = dict(security="curve", secret_key_path=secret_file, public_key_path="",
                    peers=[SimpleNamespace(id="peer", public_key=peer_public)],
                    allowed_keys_dir="")
        return SimpleNamespace(**dict(base, **over))

    sec = security_from_config(cfg())
    assert isinstance(sec, CurveSecurity) and len(sec.allowed_public_keys) == 1
    none = security_from_config(cfg(security="none"))
    assert isinstance(none, NoSecurity)
    none.start(None)
    assert "neither authenticated nor encrypted" in caplog.text
    with pytest.raises(SecurityError, match="not one of"):
        security_from_config(cfg(security="plain"))
    with pytest.raises(SecurityError, match="secret_key_path"):
        security_from_config(cfg(secret_key_path=""))
    with pytest.raises(SecurityError, match="at least one peer with a public_key"):
        security_from_config(cfg(peers=[]))


def test_keys_command_generate_and_show(tmp_path, capsys):
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "src1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert main(["keys", "show", str(tmp_path / "src1.key_secret")]) == 0
    assert capsys.readouterr().out.strip() == out[-1]
    assert main(["keys", "generate", "--dir", str(tmp_path), "--name", "src1"]) == 2
    os.chmod(str(tmp_path / "src1.key_secret"), 0o644)
    assert main(["keys", "show", str(tmp_path / "src1.key_secret")]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_security_from_node_config_allows_peer_keys_and_the_allowed_keys_dir(tmp_path):
    from agent.config.node import parse_config
    from agent.net.security import security_from_config

    me_pub, me_sec = generate_keypair(str(tmp_path), "w1")
    peer_pub, _ = generate_keypair(str(tmp_path), "s1")
    other_pub, _ = generate_keypair(str(tmp_path), "x")
    base = {"node_id": "w1", "role": "worker", "stage": 1, "bundle": "b", "state_dir": "st",
            "control_bind": "tcp://127.0.0.1:5551", "data_bind": "tcp://127.0.0.1:5552",
            "peers": [{"id": "s1", "stage": 0, "control_address": "tcp://127.0.0.1:5561",
                       "data_address": "tcp://127.0.0.1:5562",
                       "public_key": load_public_key(peer_pub).decode()}]}
    cfg = parse_config(dict(base, security="curve", secret_key_path="w1.key_secret",
                            public_key_path="w1.key"), str(tmp_path))
    sec = security_from_config(cfg)
    assert isinstance(sec, CurveSecurity)
    assert sec.allowed_public_keys == {load_public_key(peer_pub)}
    assert sec.public_key == load_public_key(me_pub)
    mismatched = parse_config(dict(base, security="curve", secret_key_path="w1.key_secret",
                                   public_key_path=other_pub), str(tmp_path))
    with pytest.raises(SecurityError, match="does not match"):
        security_from_config(mismatched)
    assert isinstance(security_from_config(parse_config(dict(base, security="none"),
                                                        str(tmp_path))), NoSecurity)
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    os.chmod(str(fleet), 0o755)
    far_pub, _ = generate_keypair(str(fleet), "w9")
    with_dir = security_from_config(parse_config(dict(
        base, security="curve", secret_key_path="w1.key_secret", public_key_path="w1.key",
        allowed_keys_dir="fleet"),
        str(tmp_path)))
    assert with_dir.allowed_public_keys == {load_public_key(peer_pub), load_public_key(far_pub)}
    os.chmod(me_sec, 0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        security_from_config(cfg)


def test_refused_keys_are_logged_once_per_interval_not_per_reconnect(caplog):
    from agent.net.security import _AllowList

    allow = _AllowList(frozenset([b"k" * 40]), log_interval_s=3600.0)
    assert allow.callback("*", b"k" * 40) is True
    for _ in range(50):
        assert allow.callback("*", b"x" * 40) is False
    assert caplog.text.count("CURVE handshake refused") == 1


def test_a_flood_of_distinct_keys_keeps_memory_and_log_lines_bounded(caplog):
    """100,000 different keys in one interval: one line at once, one line after the interval
    naming at most MAX_KEYS_NAMED keys with their counts and the rest summed; what the list
    remembers never grows past MAX_KEYS_NAMED keys."""
    from agent.net.security import _AllowList

    now = [0.0]
    allow = _AllowList(frozenset([b"k" * 40]), log_interval_s=60.0, clock=lambda: now[0])
    keys = [("%040d" % i).encode() for i in range(100000)]
    for key in keys:
        assert allow.callback("*", key) is False
        assert len(allow._since) <= allow.MAX_KEYS_NAMED
    allow.callback("*", keys[1])  # a named key refused again
    lines = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert lines == ["CURVE handshake refused for unknown public key(s): %s (1)"
                     % keys[0].decode()]
    now[0] = 60.0
    allow.callback("*", keys[2])
    lines = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert len(lines) == 2
    named = lines[1].split(": ", 1)[1]
    assert named.count(" (") == allow.MAX_KEYS_NAMED
    assert "%s (2)" % keys[1].decode() in named and "%s (2)" % keys[2].decode() in named
    # 99,999 refusals after the first line, plus 2 repeats; MAX_KEYS_NAMED keys named
    others = 99999 + 2 - (allow.MAX_KEYS_NAMED + 2)
    assert named.endswith("and %d refusal(s) of other keys" % others)
    assert allow._since == {} and allow._others == 0


def test_a_config_file_must_choose_its_security_mode_explicitly(tmp_path):
    """security = "none" only by explicit choice: a node file without the field is refused."""
    from agent.config.node import ConfigError, load_config

    body = ('node_id = "w1"\nrole = "worker"\nstage = 1\nbundle = "b"\nstate_dir = "s"\n'
            'control_bind = "tcp://127.0.0.1:5551"\ndata_bind = "tcp://127.0.0.1:5552"\n'
            '[[peers]]\nid = "s1"\nstage = 0\ncontrol_address = "tcp://127.0.0.1:5541"\n'
            'data_address = "tcp://127.0.0.1:5542"\n')
    path = tmp_path / "node.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match='security: missing; write security = "curve"'):
        load_config(str(path))
    path.write_text('security = "none"\n' + body)
    assert load_config(str(path)).security == "none"


def test_each_key_speaks_for_exactly_one_node(tmp_path):
    """key_owners: a peer's public_key belongs to that peer (it wins over a differently named
    file for the same key), a NAME.key file in allowed_keys_dir to node NAME, a key given to
    two peers to nobody; without CURVE there is no map."""
    from agent.net.security import key_owners

    keys = {}
    for n in ("w1", "w2", "host-7"):
        public_file, _ = generate_keypair(str(tmp_path), n)
        keys[n] = load_public_key(public_file).decode()
    peer = lambda i, k: SimpleNamespace(id=i, public_key=k)  # noqa: E731
    cfg = SimpleNamespace(security="curve", allowed_keys_dir=str(tmp_path),
                          peers=[peer("s1", keys["host-7"])])
    assert key_owners(cfg) == {keys["host-7"]: "s1", keys["w1"]: "w1", keys["w2"]: "w2"}
    cfg.peers = [peer("a", keys["w1"]), peer("b", keys["w1"])]
    assert keys["w1"] not in key_owners(cfg)
    cfg.security = "none"
    assert key_owners(cfg) == {}


def test_refusals_counted_after_the_last_line_are_logged_by_flush_once_due_and_at_stop(caplog):
    """Rule: refusals counted after a line are not lost when no further handshake comes:
    ``flush`` logs them once log_interval_s has passed (not before, and nothing when none
    were counted), and CurveSecurity.stop logs what is left at once."""
    from agent.net.security import _AllowList

    now = [0.0]
    allow = _AllowList(frozenset([b"k" * 40]), log_interval_s=60.0, clock=lambda: now[0])
    for _ in range(3):
        allow.callback("*", b"x" * 40)  # the first is logged, the next two counted
    now[0] = 30.0
    allow.flush()
    refused = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert len(refused) == 1  # not due yet
    now[0] = 61.0
    allow.flush()
    refused = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert len(refused) == 2 and refused[1].endswith("%s (2)" % ("x" * 40))
    now[0] = 200.0
    allow.flush()  # nothing counted since: no line
    assert sum("handshake refused" in r.getMessage() for r in caplog.records) == 2

    sec = CurveSecurity(*zmq.curve_keypair(), allowed_public_keys=[zmq.curve_keypair()[0]])
    sec._allow = _AllowList(sec.allowed_public_keys, log_interval_s=3600.0)  # as start() makes it
    sec._allow.callback("*", b"y" * 40)
    sec._allow.callback("*", b"y" * 40)  # counted, not yet logged
    sec.stop()
    refused = [r.getMessage() for r in caplog.records if "handshake refused" in r.getMessage()]
    assert len(refused) == 4 and refused[-1].endswith("%s (1)" % ("y" * 40))


def test_a_public_key_path_that_is_no_regular_file_is_refused_as_such(tmp_path):
    """Rule: a device or a FIFO given as a public key file is refused as not a regular file
    (not read, which would block or never end, and not blamed on its mode)."""
    fifo = str(tmp_path / "peer.key")
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(SecurityError, match="is not a regular file"):
            load_public_key(path)


def test_keys_generate_with_an_empty_name_is_refused_not_the_host_name(tmp_path, capsys):
    """Rule: ``--name ""`` is a usage error naming --name; only a missing --name means this
    host's name."""
    assert main(["keys", "generate", "--name", "", "--dir", str(tmp_path)]) == 2
    assert "--name: must be" in capsys.readouterr().err and os.listdir(str(tmp_path)) == []
