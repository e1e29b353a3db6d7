"""CURVE authentication and encryption for every ZeroMQ socket of the agent.

Two ``Security`` objects share one small interface the transport calls:

- ``start(ctx)`` once per context before sockets are bound (starts the ZAP authenticator),
- ``apply_server(sock)`` on every socket that binds (ROUTER data, PUB control),
- ``apply_client(sock, server_public_key)`` on every socket that connects (DEALER, SUB),
- ``flush_log()`` now and then (the loop's status tick): refusals not yet logged, once due,
- ``stop()`` at shutdown.

``CurveSecurity`` makes every bound socket a CURVE server whose ZAP handler (pyzmq's
``ThreadAuthenticator``) accepts only the public keys on the allow-list; a peer whose key is not
listed never completes the handshake, so none of its frames reach the agent. A connecting
socket must know the server's public key, so an impostor at a peer's address gets nothing either.
``NoSecurity`` is the explicit opt-out (``security = "none"``), logged as a warning.

Reading and writing key files is ``agent.net.keyfiles`` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Container, Dict, Iterable, List, Optional

from agent.net.clientkeys import AllowedClients
from agent.net.keyfile_create import generate_keypair  # noqa: F401  (part of this API)
from agent.net.keyfiles import (  # noqa: F401  (key-file functions are part of this API)
    SecurityError, _check_z85, check_secret_key_permissions, load_allowed_keys, load_public_key,
    load_secret_key_file)

log = logging.getLogger(__name__)

SECURITY_MODES = ("curve", "none")


class NoSecurity:
    """Plain TCP: no authentication, no encryption. Only by explicit choice."""

    name = "none"
    public_key = None  # type: Optional[bytes]

    def start(self, ctx) -> None:
        """Warn once that traffic is neither authenticated nor encrypted."""
        log.warning("security = \"none\": ZeroMQ traffic is neither authenticated nor encrypted; "
                    "any host that can reach this agent's ports can send it frames")

    def stop(self) -> None:
        """Nothing to stop."""

    def flush_log(self) -> None:
        """Nothing is refused: nothing to log."""

    def apply_server(self, sock) -> None:
        """Leave a binding socket unauthenticated."""

    def apply_client(self, sock, server_public_key: Optional[bytes] = None) -> None:
        """Leave a connecting socket unauthenticated."""


class CurveSecurity:
    """CURVE on every socket with an allow-list of peer public keys (z85, 40 bytes each)."""

    name = "curve"

    def __init__(self, public_key: bytes, secret_key: bytes,
                 allowed_public_keys: Iterable[bytes], refusal_hint: str = "") -> None:
        self.public_key = _check_z85(public_key, "own public key")
        self.refusal_hint = refusal_hint  # the fix a refusal's log line ends with
        self._secret_key = _check_z85(secret_key, "own secret key")
        self.allowed_public_keys = frozenset(_check_z85(k, "allowed public key")
                                             for k in allowed_public_keys)
        self._auth = None
        self._allow: Optional[_AllowList] = None

    def start(self, ctx) -> None:
        """Start the ZAP authenticator on ``ctx``; call before any socket binds."""
        from zmq.auth.thread import ThreadAuthenticator

        if self._auth is not None:
            return
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("agent.net.security.zap"))
        auth.start()
        self._allow = _AllowList(self.allowed_public_keys, hint=self.refusal_hint)
        auth.configure_curve_callback(domain="*", credentials_provider=self._allow)
        self._auth = auth
        log.info("CURVE on: %d allowed peer key(s), own public key %s",
                 len(self.allowed_public_keys), self.public_key.decode("ascii"))

    def flush_log(self) -> None:
        """Log the refusals counted since the last line once ``log_interval_s`` has passed,
        though no handshake came since to log them (a refused peer that gave up)."""
        if self._allow is not None:
            self._allow.flush()

    def stop(self) -> None:
        """Stop the authenticator (after the sockets are closed); refusals not yet logged are
        logged now."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._allow is not None:
            self._allow.flush(force=True)

    def apply_server(self, sock) -> None:
        """Make a socket that binds a CURVE server checked against the allow-list."""
        import zmq

        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._secret_key)
        sock.setsockopt(zmq.CURVE_SERVER, 1)

    def apply_client(self, sock, server_public_key: Optional[bytes] = None) -> None:
        """Make a connecting socket a CURVE client that only talks to ``server_public_key``."""
        import zmq

        if server_public_key is None:
            raise SecurityError("security = \"curve\": the peer this socket connects to has no "
                                "public key configured")
        sock.setsockopt(zmq.CURVE_SERVERKEY, _check_z85(server_public_key, "peer public key"))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self._secret_key)


class _AllowList:
    """Credentials provider for pyzmq's authenticator: z85 public keys (a set, or an
    ``AllowedClients`` read again on SIGHUP: ``in`` is all it is asked).

    A refused peer reconnects every few hundred milliseconds, and anyone who can reach a bound
    endpoint can offer a new key on every handshake, so refusals are logged as one line per
    ``log_interval_s`` at most, naming up to ``MAX_KEYS_NAMED`` keys with their counts (the
    rest summed): memory and log lines stay bounded however many keys are tried. ``flush``
    logs what was counted since the last line when no handshake came to do it (the callback
    runs on the authenticator's thread, ``flush`` on the loop's: a lock guards the counts).
    """

    MAX_KEYS_NAMED = 16

    def __init__(self, keys: Container, log_interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, hint: str = "") -> None:
        self.keys = keys
        self.hint = hint  # where an allowed key goes, appended to each line
        self.log_interval_s = log_interval_s
        self.clock = clock
        self._logged_at: Optional[float] = None  # clock() of the last line
        self._since: Dict[bytes, int] = {}  # refusals since the last line, by key
        self._others = 0  # refusals since the last line of keys past MAX_KEYS_NAMED
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        with self._lock:
            if key in self._since or len(self._since) < self.MAX_KEYS_NAMED:
                self._since[key] = self._since.get(key, 0) + 1
            else:
                self._others += 1
            self._log_if_due(False)
        return False

    def flush(self, force: bool = False) -> None:
        """Log the refusals counted since the last line, if any, once due (``force``: now)."""
        with self._lock:
            if self._since or self._others:
                self._log_if_due(force)

    def _log_if_due(self, force: bool) -> None:
        now = self.clock()
        if force or self._logged_at is None or now - self._logged_at >= self.log_interval_s:
            named = ", ".join("%s (%d)" % (k.decode("ascii", "replace"), n)
                              for k, n in self._since.items())
            more = ("; and %d refusal(s) of other keys" % self._others) if self._others else ""
            log.warning("CURVE handshake refused for unknown public key(s): %s%s%s", named, more,
                        "; " + self.hint if self.hint else "")
            self._since, self._others, self._logged_at = {}, 0, now


def security_from_config(cfg):
    """The ``Security`` for a ``NodeConfig``: its ``security`` mode, own key files, and an
    allow-list made of the configured peers' ``public_key`` values (z85 or key file paths)
    plus every ``*.key`` file in ``allowed_keys_dir`` (a source accepts results from workers
    that are not its peers).

    Checks that ``public_key_path`` matches the public key inside ``secret_key_path``.
    """
    if cfg.security == "none":
        return NoSecurity()
    if cfg.security != "curve":
        raise SecurityError("security = %r is not one of %s"
                            % (cfg.security, ", ".join(SECURITY_MODES)))
    if not cfg.secret_key_path:
        raise SecurityError("security = \"curve\" needs secret_key_path (a NAME.key_secret file "
                            "from `edge-agent keys generate`)")
    public, secret = _named("secret_key_path", load_secret_key_file, cfg.secret_key_path)
    if cfg.public_key_path:
        listed = _named("public_key_path", load_public_key, cfg.public_key_path)
        if _secret_of(listed, {public: ""}) is not None:
            raise SecurityError("public_key_path %s holds this node's SECRET key: put its public "
                                "key there (`edge-agent keys show %s`), and re-key this node if "
                                "that file left it" % (cfg.public_key_path, cfg.secret_key_path))
        if listed != public:
            raise SecurityError("public_key_path %s does not match the public key inside "
                                "secret_key_path %s" % (cfg.public_key_path, cfg.secret_key_path))
    allowed: List[bytes] = []
    for i, peer in enumerate(cfg.peers):
        if not peer.public_key:
            raise SecurityError("security = \"curve\": peer %r has no public_key" % peer.id)
        allowed.append(_named("peers[%d].public_key (peer %r)" % (i, peer.id), load_public_key,
                              peer.public_key))
    keys_dir = getattr(cfg, "allowed_keys_dir", "")
    if keys_dir:
        allowed.extend(_named("allowed_keys_dir", load_allowed_keys, keys_dir))
    _refuse_secrets(cfg, public, keys_dir)
    if keys_dir:
        _check_peer_files(cfg, keys_dir)
    if not allowed:
        raise SecurityError("security = \"curve\" needs at least one peer with a public_key")
    hint = ("a node of the fleet? put its NAME.key in allowed_keys_dir %s (or give it as that "
            "peer's public_key) and restart this agent; the refused node dials again every few "
            "seconds" % keys_dir if keys_dir else
            "a node of the fleet? give its key as that peer's public_key in the config and "
            "restart this agent; the refused node dials again every few seconds")
    return CurveSecurity(public, secret, allowed, refusal_hint=hint)


def _secret_of(value: bytes, known: Dict[bytes, str]) -> Optional[str]:
    """The node whose SECRET key ``value`` is, among ``known`` (public key -> node id, "" for
    this node); None when it is the secret of no known key."""
    import zmq

    try:
        return known.get(zmq.curve_public(value))
    except (zmq.ZMQError, ValueError, TypeError):
        return None


def _refuse_secrets(cfg, public: bytes, keys_dir: str) -> None:
    """Refuse a peer's ``public_key`` (or a ``NAME.key`` in ``allowed_keys_dir``) that is the
    SECRET key of a node whose public key this config holds: the value is never shown (the
    stale-key message would show it, and call a secret stale), and that node must be re-keyed,
    its secret having left it."""
    sources = [("peers[%d].public_key (peer %r)" % (i, p.id), p.id, load_public_key(p.public_key))
               for i, p in enumerate(cfg.peers)]
    if keys_dir and os.path.isdir(keys_dir):
        sources += [("allowed_keys_dir file %s" % os.path.join(keys_dir, n), n[:-len(".key")],
                     load_public_key(os.path.join(keys_dir, n)))
                    for n in sorted(os.listdir(keys_dir)) if n.endswith(".key")]
    known = {public: ""}  # public key -> its node ("": this one)
    for _, node, value in sources:
        known.setdefault(value, node)
    for where, node, value in sources:
        owner = _secret_of(value, known)
        if owner is None:
            continue
        exposed = "this node" if owner == "" else owner
        raise SecurityError("%s holds %s SECRET key (value not shown): put %s's public key there "
                            "(`edge-agent keys show` prints it), and re-key %s (`edge-agent keys "
                            "generate --force`): its secret is exposed"
                            % (where, "this node's own" if owner == "" else owner + "'s", node,
                               exposed))


def _check_peer_files(cfg, keys_dir: str) -> None:
    """A peer's ``public_key`` and the ``NAME.key`` file of that peer in ``allowed_keys_dir``
    must hold one key: two keys for one node mean one of them is stale (re-keyed on one side
    only), and a wrong ``public_key`` fails every handshake with that peer without a word."""
    for i, peer in enumerate(cfg.peers):
        path = os.path.join(keys_dir, peer.id + ".key")
        if not os.path.isfile(path):
            continue
        listed = load_public_key(peer.public_key)
        held = load_public_key(path)
        if listed != held:
            raise SecurityError(
                "peers[%d].public_key (peer %r) is %s but allowed_keys_dir holds %s for it (%s): "
                "one of them is stale; give both the key in %s's own NAME.key file (`edge-agent "
                "keys show` prints it)" % (i, peer.id, listed.decode("ascii"), held.decode("ascii"),
                                           path, peer.id))


def _named(field_name: str, load, arg):
    """``load(arg)`` with the config field it came from in front of any error."""
    try:
        return load(arg)
    except SecurityError as exc:
        raise SecurityError("%s: %s" % (field_name, exc)) from None


CLIENT_ZAP_DOMAIN = "clients"  # ZAP domain of a source's client socket (its own allow-list)


def serve_clients_over_curve(security, sock, allowed_keys: Iterable[bytes],
                             on_refused=None) -> None:
    """Make ``sock`` (a source's client socket) a CURVE server with its own allow-list.

    The socket uses this node's keys and the ZAP domain ``CLIENT_ZAP_DOMAIN``, whose allow-list
    is ``allowed_keys`` (the clients' public keys, or an ``AllowedClients`` whose current list
    each handshake is checked against), apart from the fleet's. ``on_refused()`` is
    called, on the authenticator's thread, for every refused handshake. Call after
    ``security.start(ctx)`` and before ``sock.bind``.
    """
    import zmq

    if not isinstance(security, CurveSecurity) or security._auth is None:
        raise SecurityError("a CURVE client socket needs security = \"curve\" (started)")
    keys = (allowed_keys if isinstance(allowed_keys, AllowedClients)  # asked at each handshake
            else frozenset(_check_z85(k, "client public key") for k in allowed_keys))
    allow = _AllowList(keys, hint="a client of this source? put its NAME.key in client_keys_dir "
                                  "and reload the source (sudo systemctl reload edge-agent@NAME: "
                                  "SIGHUP)")
    if on_refused is not None:
        check = allow.callback

        def callback(domain: str, key: bytes) -> bool:
            ok = check(domain, key)
            if not ok:
                on_refused()
            return ok

        allow.callback = callback  # type: ignore[method-assign]
    security._auth.configure_curve_callback(domain=CLIENT_ZAP_DOMAIN, credentials_provider=allow)
    sock.setsockopt(zmq.ZAP_DOMAIN, CLIENT_ZAP_DOMAIN.encode("ascii"))
    security.apply_server(sock)


def key_owners(cfg) -> Dict[str, str]:
    """z85 public key -> the one node id it speaks as, under ``security = "curve"``.

    Peers' ``public_key`` values name their node; a ``NAME.key`` file in ``allowed_keys_dir``
    names node ``NAME`` unless a peer already names that key's node. A key given to two
    different peers belongs to neither (logged), so it cannot speak at all. ``{}`` without
    CURVE.
    """
    if cfg.security != "curve":
        return {}
    owners: Dict[str, str] = {}
    clash = set()
    for p in cfg.peers:
        if p.public_key:
            k = load_public_key(p.public_key).decode("ascii")
            if owners.get(k, p.id) != p.id:
                clash.add(k)
            owners[k] = p.id
    keys_dir = getattr(cfg, "allowed_keys_dir", "")
    if keys_dir and os.path.isdir(keys_dir):
        for name in sorted(n for n in os.listdir(keys_dir) if n.endswith(".key")):
            k = load_public_key(os.path.join(keys_dir, name)).decode("ascii")
            owners.setdefault(k, name[:-len(".key")])
    for k in clash:
        log.warning("public key %s is given to more than one peer; it is refused as all", k)
        del owners[k]
    return owners
