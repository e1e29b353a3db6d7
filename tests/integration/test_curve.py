"""CURVE on real ZeroMQ sockets: only allow-listed peers get frames through, on the data plane
(DEALER -> ROUTER) and on the control plane (PUB -> SUB) in both directions."""

import time

import pytest
import zmq

from agent.security import (
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
