"""CURVE on real ZeroMQ sockets: only allow-listed peers get frames through, on the data plane
(DEALER -> ROUTER) and on the control plane (PUB -> SUB) in both directions."""

import time

import pytest
import zmq

from agent.net.security import (
    CurveSecurity,
    NoSecurity,
    generate_keypair,
    load_secret_key_file,
)

DEADLINE_S = 20.0


def _keys(tmp_path, name):
    _, secret_file = generate_keypair(str(tmp_path), name)
    return load_secret_key_file(secret_file)


@pytest.fixture
def fleet(tmp_path):
    """Three identities: 'server' allows only 'friend'; 'stranger' is unknown to it."""
    keys = {n: _keys(tmp_path, n) for n in ("server", "friend", "stranger")}
    ctx = zmq.Context()
    secs = {
        "server": CurveSecurity(*keys["server"], allowed_public_keys=[keys["friend"][0]]),
        "friend": CurveSecurity(*keys["friend"], allowed_public_keys=[keys["server"][0]]),
        "stranger": CurveSecurity(*keys["stranger"], allowed_public_keys=[keys["server"][0]]),
    }
    secs["server"].start(ctx)
    socks = []

    def sock(kind):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        socks.append(s)
        return s

    yield ctx, secs, keys, sock
    for s in socks:
        s.close(0)
    secs["server"].stop()
    ctx.term()


def _poll_recv(sock, deadline_s):
    """Receive one multipart message within ``deadline_s``, else None."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if sock.poll(100):
            return sock.recv_multipart()
    return None


def _wait_auth_failure(monitor, deadline_s):
    """True once the monitored socket reports that the server refused its handshake."""
    from zmq.utils.monitor import recv_monitor_message

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if monitor.poll(100):
            event = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return True
    return False


def test_router_accepts_frames_only_from_allowed_dealer(fleet):
    _ctx, secs, keys, sock = fleet
    router = sock(zmq.ROUTER)
    secs["server"].apply_server(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    stranger = sock(zmq.DEALER)
    secs["stranger"].apply_client(stranger, keys["server"][0])
    monitor = stranger.get_monitor_socket()
    stranger.connect("tcp://127.0.0.1:%d" % port)
    stranger.send_multipart([b"TASK", b"from-stranger"])

    friend = sock(zmq.DEALER)
    secs["friend"].apply_client(friend, keys["server"][0])
    friend.connect("tcp://127.0.0.1:%d" % port)
    friend.send_multipart([b"TASK", b"from-friend"])

    assert _wait_auth_failure(monitor, DEADLINE_S), "stranger's handshake was not refused"
    stranger.disable_monitor()
    monitor.close(0)
    # The friend's frame arrives; by then the stranger's handshake (sent first) was refused.
    got = _poll_recv(router, DEADLINE_S)
    assert got is not None and got[1:] == [b"TASK", b"from-friend"]
    # Keep listening a while longer: nothing from the stranger ever shows up.
    for _ in range(5):
        friend.send_multipart([b"TASK", b"again"])
        got = _poll_recv(router, DEADLINE_S)
        assert got is not None and got[1:] == [b"TASK", b"again"]
    assert _poll_recv(router, 0.5) is None


def test_pub_sends_nothing_to_a_subscriber_without_an_allowed_key(fleet):
    _ctx, secs, keys, sock = fleet
    pub = sock(zmq.PUB)
    secs["server"].apply_server(pub)
    port = pub.bind_to_random_port("tcp://127.0.0.1")

    subs = {}
    for who in ("stranger", "friend"):
        s = sock(zmq.SUB)
        secs[who].apply_client(s, keys["server"][0])
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect("tcp://127.0.0.1:%d" % port)
        subs[who] = s

    # PUB drops messages until a subscription is in place: publish until the friend hears one.
    heard = None
    end = time.monotonic() + DEADLINE_S
    while heard is None and time.monotonic() < end:
        pub.send_multipart([b"STATUS", b"server"])
        heard = _poll_recv(subs["friend"], 0.1)
    assert heard == [b"STATUS", b"server"]
    for _ in range(5):
        pub.send_multipart([b"STATUS", b"server"])
    assert _poll_recv(subs["friend"], DEADLINE_S) == [b"STATUS", b"server"]
    assert _poll_recv(subs["stranger"], 0.5) is None


def test_sub_accepts_nothing_from_an_impostor_publisher(fleet):
    """A SUB configured with the real server's key refuses a PUB holding another key."""
    _ctx, secs, keys, sock = fleet
    impostor_sec = CurveSecurity(*keys["stranger"], allowed_public_keys=[keys["friend"][0]])
    impostor_ctx = zmq.Context()
    impostor_sec.start(impostor_ctx)
    impostor = impostor_ctx.socket(zmq.PUB)
    impostor.setsockopt(zmq.LINGER, 0)
    try:
        impostor_sec.apply_server(impostor)
        port = impostor.bind_to_random_port("tcp://127.0.0.1")
        sub = sock(zmq.SUB)
        secs["friend"].apply_client(sub, keys["server"][0])  # expects the real server
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect("tcp://127.0.0.1:%d" % port)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            impostor.send_multipart([b"STATUS", b"fake"])
            assert _poll_recv(sub, 0.1) is None
    finally:
        impostor.close(0)
        impostor_sec.stop()
        impostor_ctx.term()


def test_plain_client_gets_nothing_through_to_a_curve_server(fleet):
    _ctx, secs, keys, sock = fleet
    router = sock(zmq.ROUTER)
    secs["server"].apply_server(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    plain = sock(zmq.DEALER)
    NoSecurity().apply_client(plain, None)
    plain.connect("tcp://127.0.0.1:%d" % port)
    plain.send_multipart([b"TASK", b"plain"])
    friend = sock(zmq.DEALER)
    secs["friend"].apply_client(friend, keys["server"][0])
    friend.connect("tcp://127.0.0.1:%d" % port)
    friend.send_multipart([b"TASK", b"ok"])
    assert _poll_recv(router, DEADLINE_S)[1:] == [b"TASK", b"ok"]
    assert _poll_recv(router, 0.5) is None


# ---------------------------------------------------------------- whole agents with CURVE

@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from .agent_cluster import build_two_stage_bundle

    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_curve_agents_serve_tasks_and_a_stranger_gets_no_frame_in(tiny_bundle, tmp_path):
    """Agents with security = "curve" complete tasks among themselves; a process holding an
    unlisted key reaches neither a worker's ROUTER (nothing counted, not even as malformed)
    nor its PUB (no heartbeat received)."""
    import dataclasses

    from engines.bundle import load_bundle

    from .agent_cluster import Cluster

    stages = load_bundle(tiny_bundle).num_stages
    nodes = dict([("s1", 0)] + [("w%d" % h, h) for h in range(1, stages + 1)])
    keydir = tmp_path / "keys"  # the fleet's keys: every node accepts every other one
    pub = {}
    for n in list(nodes) + ["stranger"]:
        public_file, _ = generate_keypair(str(keydir if n != "stranger" else tmp_path), n)
        pub[n] = load_secret_key_file(public_file + "_secret")
    cluster = Cluster(str(tmp_path), tiny_bundle, nodes, arrival_rate_tasks_s=10.0)

    def secure(node):
        peers = tuple(dataclasses.replace(p, public_key=pub[p.id][0].decode())
                      for p in cluster.config(node).peers)
        return dict(security="curve", peers=peers,
                    secret_key_path=str(keydir / (node + ".key_secret")),
                    public_key_path=str(keydir / (node + ".key")),
                    allowed_keys_dir=str(keydir))

    ctx = zmq.Context()
    stranger = CurveSecurity(*pub["stranger"], allowed_public_keys=[pub["w1"][0]])
    socks = []
    try:
        for n in sorted(nodes, key=nodes.get, reverse=True):
            cluster.start(n, **secure(n))

        def completed():
            return sum(1 for r in cluster.records("s1") if r.get("status") == "completed") >= 3

        cluster.wait_for(lambda: (cluster.stats("s1") or {}).get("tasks", {}).get(
            "completed", 0) >= 3 or completed(), 120.0, "3 tasks completed over CURVE")

        w1 = cluster.config("w1")
        dealer = ctx.socket(zmq.DEALER)
        sub = ctx.socket(zmq.SUB)
        socks += [dealer, sub]
        for s in socks:
            s.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.ROUTING_ID, b"s1")  # even claiming a known node id
        stranger.apply_client(dealer, pub["w1"][0])
        monitor = dealer.get_monitor_socket()
        dealer.connect(w1.data_bind)
        stranger.apply_client(sub, pub["w1"][0])
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(w1.control_bind)
        for _ in range(5):
            dealer.send_multipart([b"not a message"])
        assert _wait_auth_failure(monitor, DEADLINE_S), "w1 did not refuse the stranger"
        dealer.disable_monitor()
        monitor.close(0)
        # w1 heartbeats every 0.2 s: a couple of seconds of silence means nothing gets through.
        assert _poll_recv(sub, 2.0) is None
        before = cluster.stats("w1")["wall_time"]
        cluster.wait_for(lambda: cluster.stats("w1") and cluster.stats("w1")["wall_time"] > before,
                         60.0, "a fresh stats.json from w1")
        stats = cluster.stats("w1")
        assert stats["dropped"] == 0, stats["counters"]
        assert stats["counters"].get("tasks_in", 0) >= 3
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
        cluster.stop_all()


def test_run_refuses_a_secret_key_others_can_read(tiny_bundle, tmp_path):
    """`edge-agent run` with a 0644 secret key exits 78 (EXIT_CONFIG) with one line naming the
    file and the fix."""
    import dataclasses
    import os
    import subprocess
    import sys

    from agent.config.node import dump_config

    from .agent_cluster import REPO, Cluster

    keydir = tmp_path / "keys"
    keys = {}
    for n in ("s1", "w1"):
        public_file, _ = generate_keypair(str(keydir), n)
        keys[n] = load_secret_key_file(public_file + "_secret")[0].decode()
    secret = str(keydir / "w1.key_secret")
    os.chmod(secret, 0o644)
    cluster = Cluster(str(tmp_path), tiny_bundle, {"s1": 0, "w1": 1})
    cfg = cluster.config("w1")
    cfg = dataclasses.replace(
        cfg, security="curve", secret_key_path=secret, public_key_path=str(keydir / "w1.key"),
        peers=tuple(dataclasses.replace(p, public_key=keys[p.id]) for p in cfg.peers
                    if p.id in keys))
    path = tmp_path / "w1.toml"
    path.write_text(dump_config(cfg))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert proc.returncode == 78, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and secret in errors[0] and "chmod 600" in errors[0], proc.stderr
