"""A source's client allow-list (``agent.net.clientkeys.AllowedClients``) read again on SIGHUP:
what a reload puts in force and says, a folder that became unusable keeping the keys in force,
the client ZAP domain asking the current list at each handshake, and each client message
tagged with its key's name and whether that key is still allowed, on real CURVE sockets."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import zmq

from agent.fleet.client import Client, ClientKeys
from agent.net.clientkeys import AllowedClients, ClientId
from agent.net.keyfiles import SecurityError, load_secret_key_file
from agent.net.keyfile_create import generate_keypair
from agent.net.security import CurveSecurity, serve_clients_over_curve
from agent.node.rejects import Rejects, sender_label
from agent.testbed.ports import free_ports


@pytest.fixture
def keys(tmp_path):
    """(clients folder holding tablet.key, folder of every pair made: tablet, laptop, server)."""
    made, clients = str(tmp_path / "made"), str(tmp_path / "clients")
    for name in ("tablet", "laptop", "server"):
        generate_keypair(made, name)
    os.makedirs(clients)
    os.chmod(clients, 0o755)
    shutil.copy(os.path.join(made, "tablet.key"), clients)
    return clients, made


def _public(made, name):
    return load_secret_key_file(os.path.join(made, name + ".key_secret"))[0]


def _run_lines(caplog, level):
    return [r.getMessage() for r in caplog.records
            if r.name == "agent.run" and r.levelno == level]


def test_a_reload_puts_added_and_removed_keys_in_force_and_says_which(keys, caplog):
    """Rule: reload reads the folder again, returns (names added, names removed), swaps the
    list so only the folder's keys are in it, and logs one INFO line `client keys reloaded
    from DIR: N keys (added: ...; removed: ...)`, `(unchanged)` when nothing changed."""
    clients, made = keys
    allowed = AllowedClients(clients)
    tablet, laptop = _public(made, "tablet"), _public(made, "laptop")
    assert tablet in allowed and laptop not in allowed and len(allowed) == 1
    assert allowed.names == {tablet.decode(): "tablet"}
    shutil.copy(os.path.join(made, "laptop.key"), clients)
    os.remove(os.path.join(clients, "tablet.key"))
    with caplog.at_level(logging.INFO, logger="agent.run"):
        assert allowed.reload() == (["laptop"], ["tablet"])
        assert allowed.reload() == ([], [])
    assert laptop in allowed and laptop.decode() in allowed and tablet not in allowed
    assert _run_lines(caplog, logging.INFO) == [
        "client keys reloaded from %s: 1 keys (added: laptop; removed: tablet)" % clients,
        "client keys reloaded from %s: 1 keys (unchanged)" % clients]


def test_a_folder_made_empty_bad_or_missing_keeps_the_keys_in_force_with_one_warning(
        keys, caplog):
    """Rule: a reload from a folder that holds no key file, holds a file that is no key, or is
    gone never raises: the keys read before stay in force and one WARNING names the folder and
    what is wrong with it."""
    clients, made = keys
    allowed = AllowedClients(clients)
    tablet = _public(made, "tablet")
    os.remove(os.path.join(clients, "tablet.key"))
    with caplog.at_level(logging.INFO, logger="agent.run"):
        assert allowed.reload() is None
        with open(os.path.join(clients, "bad.key"), "w") as f:
            f.write("not a key\n")
        assert allowed.reload() is None
        shutil.rmtree(clients)
        assert allowed.reload() is None
    assert tablet in allowed and len(allowed) == 1
    warnings = _run_lines(caplog, logging.WARNING)
    assert len(warnings) == 3 and not _run_lines(caplog, logging.INFO), warnings
    for line, why in zip(warnings, ("client_keys_dir %s holds no *.key files" % clients,
                                    "%s/bad.key holds no public-key line" % clients,
                                    "no folder %s: " % clients)):
        assert line.startswith("client keys not reloaded: " + why), line
        assert line.endswith("; the 1 key(s) read before stay in force"), line


def test_an_unusable_folder_at_start_is_refused(tmp_path):
    """Rule: at start (no keys in force yet) an empty or missing folder is a SecurityError
    naming it, as before a reload existed."""
    with pytest.raises(SecurityError, match="no folder /nonexistent/clients"):
        AllowedClients("/nonexistent/clients")
    with pytest.raises(SecurityError, match="client_keys_dir %s holds no" % tmp_path):
        AllowedClients(str(tmp_path))


@pytest.fixture
def served(keys):
    """A CURVE client socket served with the clients folder's list: (endpoint, the list, the
    ROUTER, context, a function giving a client's keys by name)."""
    clients, made = keys
    ctx = zmq.Context()
    server_pub, server_sec = load_secret_key_file(os.path.join(made, "server.key_secret"))
    security = CurveSecurity(server_pub, server_sec, [])
    security.start(ctx)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    allowed = AllowedClients(clients)
    serve_clients_over_curve(security, router, allowed)
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    router.bind(endpoint)

    def client_keys(name):
        return ClientKeys.load(os.path.join(made, name + ".key_secret"),
                               os.path.join(made, "server.key"))
    try:
        yield endpoint, allowed, router, ctx, client_keys
    finally:
        router.close()
        security.stop()
        ctx.term()


def test_the_client_domain_asks_the_current_list_at_each_handshake(keys, served):
    """Rule: a key added to the folder is let in at its next handshake after the reload, and a
    key removed is refused at its next one (the ZAP handler reads the list in force)."""
    clients, made = keys
    endpoint, allowed, _, ctx, client_keys = served

    def check(name):
        with Client(endpoint, client_keys(name), ctx=ctx) as c:
            return c.check_connection(20.0)
    assert check("tablet") == ""
    assert check("laptop").startswith("the source refused this client's key")
    shutil.copy(os.path.join(made, "laptop.key"), clients)
    os.remove(os.path.join(clients, "tablet.key"))
    allowed.reload()
    assert check("laptop") == ""
    assert check("tablet").startswith("the source refused this client's key")


def test_each_message_is_tagged_with_its_keys_name_and_revoked_once_the_key_is_removed(
        keys, served):
    """Rule: a client message's routing id comes as a ClientId naming the key it authenticated
    with; on the connection it opened before, a message sent after its key was removed and
    the list reloaded is tagged revoked (still named), while the routing id stays the one the
    answer goes to."""
    clients, made = keys
    endpoint, allowed, router, ctx, client_keys = served
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    client_keys("tablet").apply(dealer)
    dealer.connect(endpoint)
    router.setsockopt(zmq.RCVTIMEO, 20000)
    dealer.setsockopt(zmq.RCVTIMEO, 20000)
    try:
        dealer.send(b"one")
        first = allowed.tag(router.recv_multipart(copy=False))
        assert isinstance(first, ClientId) and (first.key_name, first.revoked) == ("tablet", False)
        os.remove(os.path.join(clients, "tablet.key"))
        shutil.copy(os.path.join(made, "laptop.key"), clients)
        allowed.reload()
        dealer.send(b"two")
        again = allowed.tag(router.recv_multipart(copy=False))
        assert (again.key_name, again.revoked) == ("tablet", True)
        assert bytes(again) == bytes(first)  # the same connection: the answer still reaches it
        router.send_multipart([again, b"answer"])
        assert dealer.recv() == b"answer"
    finally:
        dealer.close()


def test_a_keyed_clients_refused_input_names_its_key_one_sender_per_key(caplog):
    """Rule: the WARNING for a keyed client's refused input names its key (`client tablet`);
    every connection of that key is one sender (its second connection's drop is counted but
    not a new first line); a client without a named key stays `a client`."""
    def tagged(routing_id, name):
        ident = ClientId(routing_id)
        ident.key_name = name
        return ident
    drops = []
    reject = Rejects(drops.append, clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="agent.node.loop"):
        reject("bad_input", tagged(b"\x00\x80\x00\x00\x01", "tablet"), "a client's bad input")
        reject("bad_input", tagged(b"\x00\x80\x00\x00\x02", "tablet"), "a client's bad input")
        reject("bad_input", tagged(b"\x00\x80\x00\x00\x03", "laptop"), "a client's bad input")
        reject("bad_input", b"\x00\x80\x00\x00\x04", "a client's bad input")
    assert drops == ["bad_input"] * 4
    assert [r.getMessage() for r in caplog.records if r.name == "agent.node.loop"] == [
        "dropped a message from client tablet: a client's bad input",
        "dropped a message from client laptop: a client's bad input",
        "dropped a message from a client: a client's bad input"]
    assert sender_label(tagged(b"\x00\x80\x00\x00\x05", "")) == "a client"
    assert sender_label(tagged(b"\x00\x80\x00\x00\x05", "cam\n2")) == "client 'cam\\n2'"
