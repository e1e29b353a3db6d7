"""SIGHUP to a CURVE source with ``client_keys_dir``: it reads the folder again, so a client is
added or revoked without a restart (which would record the tasks still in flight after the
drain as lost). A real source process on loopback with its CURVE client endpoint, and real
clients (``agent.fleet.client``). No worker runs: every task a client sends is answered soon,
``rejected`` or ``lost`` for ``no_route``, which is enough to tell a client served from one
refused."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal

import numpy as np
import pytest

from agent.fleet.client import Client, ClientKeys
from agent.net.keyfiles import load_secret_key_file
from agent.net.keyfile_create import generate_keypair
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

X = np.zeros((1, 1, 8, 8), dtype=np.float32)  # one input of the tiny bundle's stage 1


def _served(answer):
    """True for the source's answer to an admitted client's task (no worker: no route)."""
    return answer.outcome in ("rejected", "lost") and answer.reason == "no_route"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_sighup_adds_and_revokes_client_keys_on_open_connections_too(bundle, tmp_path):
    """Rule: on SIGHUP a source re-reads client_keys_dir and says so in one INFO line: a client
    whose key was added after start is refused before and served after it; a client whose key
    was removed is served before and, on the SAME open connection, answered error /
    revoked_client after it (counted drop_revoked_client, its WARNING naming its key), while
    other clients are still served; a bad input's WARNING names the client's key; a folder
    made empty keeps the keys in force with one WARNING; the source stops cleanly."""
    keydir, made = str(tmp_path / "keys"), str(tmp_path / "made")
    clients = os.path.join(keydir, "clients")
    public = {n: load_secret_key_file(generate_keypair(keydir, n)[1])[0].decode()
              for n in ("s1", "w1", "w2")}
    for name in ("tablet", "laptop"):
        generate_keypair(made, name)
    os.makedirs(clients)
    os.chmod(clients, 0o755)
    shutil.copy(os.path.join(made, "tablet.key"), clients)
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    c = Cluster(str(tmp_path / "agents"), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                thresholds=(0.6, 1.0))
    peers = tuple(dataclasses.replace(p, public_key=public[p.id]) for p in c.config("s1").peers)

    def keys(name):
        return ClientKeys.load(os.path.join(made, name + ".key_secret"),
                               os.path.join(keydir, "s1.key"))

    def hangup(line):
        """SIGHUP the source and wait for ``line`` in its log."""
        os.kill(c.procs["s1"].pid, signal.SIGHUP)
        c.wait_for(lambda: line in c.tail("s1", 400), 30, repr(line))

    def dropped(reason):
        return ((c.stats("s1") or {}).get("counters", {})).get("drop_" + reason, 0)

    tablet = laptop = None
    try:
        c.start("s1", arrival="client", client_bind=endpoint, client_keys_dir=clients,
                security="curve", peers=peers, allowed_keys_dir=keydir,
                secret_key_path=os.path.join(keydir, "s1.key_secret"),
                public_key_path=os.path.join(keydir, "s1.key"))
        tablet = Client(endpoint, keys("tablet"), timeout_s=30)
        assert tablet.check_connection(60.0) == ""
        assert _served(tablet.infer(X))
        with Client(endpoint, keys("laptop"), timeout_s=30) as refused:
            assert refused.check_connection(20.0).startswith(
                "the source refused this client's key")

        shutil.copy(os.path.join(made, "laptop.key"), clients)
        hangup("INFO agent.run: client keys reloaded from %s: 2 keys (added: laptop)" % clients)
        laptop = Client(endpoint, keys("laptop"), timeout_s=30)
        assert laptop.check_connection(20.0) == ""
        assert _served(laptop.infer(X))

        os.remove(os.path.join(clients, "tablet.key"))
        hangup("client keys reloaded from %s: 1 keys (removed: tablet)" % clients)
        answer = tablet.infer(X)  # the connection opened while its key was allowed
        assert (answer.outcome, answer.reason) == ("error", "revoked_client"), answer
        c.wait_for(lambda: dropped("revoked_client") == 1, 30, "drop_revoked_client")
        assert "WARNING agent.node.loop: dropped a message from client tablet: its key is " \
            "not in client_keys_dir" in c.tail("s1", 400)
        assert _served(laptop.infer(X))  # the others are still served

        answer = laptop.infer(np.zeros((1, 1, 4, 4), dtype=np.float32))
        assert (answer.outcome, answer.reason) == ("error", "bad_input"), answer
        assert "dropped a message from client laptop: a client's input" in c.tail("s1", 400)

        os.remove(os.path.join(clients, "laptop.key"))
        hangup("WARNING agent.run: client keys not reloaded: client_keys_dir %s holds no *.key "
               "files; the 1 key(s) read before stay in force" % clients)
        assert _served(laptop.infer(X))
        with Client(endpoint, keys("laptop"), timeout_s=30) as again:  # a new handshake too
            assert again.check_connection(20.0) == ""
        assert c.procs["s1"].poll() is None
    finally:
        for client in (tablet, laptop):
            if client is not None:
                client.close()
        c.stop_all()
    assert c.procs["s1"].returncode == 0
