"""CURVE authentication and encryption for every ZeroMQ socket of the agent.

Two ``Security`` objects share one small interface the transport calls:

- ``start(ctx)`` once per context before sockets are bound (starts the ZAP authenticator),
- ``apply_server(sock)`` on every socket that binds (ROUTER data, PUB control),
- ``apply_client(sock, server_public_key)`` on every socket that connects (DEALER, SUB),
- ``stop()`` at shutdown.

``CurveSecurity`` makes every bound socket a CURVE server whose ZAP handler (pyzmq's
``ThreadAuthenticator``) accepts only the public keys on the allow-list; a peer whose key is not
listed never completes the handshake, so none of its frames reach the agent. A connecting
socket must know the server's public key, so an impostor at a peer's address gets nothing either.
``NoSecurity`` is the explicit opt-out (``security = "none"``), logged as a warning.

Key files use ZeroMQ's certificate format (as written by ``zmq.auth.create_certificates``):
``NAME.key`` holds the public key, ``NAME.key_secret`` both keys. A secret key file must be
owned by the user running the agent and readable by nobody else (0600 or 0400).
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
import time
from typing import Dict, Iterable, List, Optional, Tuple

from agent.errors import UsageError
from agent.ops.atomic import write_atomic
from agent.ops.files import KEY_FILE_MAX_BYTES, FileFault, read_bounded

log = logging.getLogger(__name__)

SECURITY_MODES = ("curve", "none")
_Z85_KEY_LEN = 40
_Z85_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       ".-:+=^!/*?&<>()[]{}@%$#")


class SecurityError(UsageError):
    """A key file or key setting is wrong (missing, malformed, unsafe permissions)."""


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

    def apply_server(self, sock) -> None:
        """Leave a binding socket unauthenticated."""

    def apply_client(self, sock, server_public_key: Optional[bytes] = None) -> None:
        """Leave a connecting socket unauthenticated."""


class CurveSecurity:
    """CURVE on every socket with an allow-list of peer public keys (z85, 40 bytes each)."""

    name = "curve"

    def __init__(self, public_key: bytes, secret_key: bytes,
                 allowed_public_keys: Iterable[bytes]) -> None:
        self.public_key = _check_z85(public_key, "own public key")
        self._secret_key = _check_z85(secret_key, "own secret key")
        self.allowed_public_keys = frozenset(_check_z85(k, "allowed public key")
                                             for k in allowed_public_keys)
        self._auth = None

    def start(self, ctx) -> None:
        """Start the ZAP authenticator on ``ctx``; call before any socket binds."""
        from zmq.auth.thread import ThreadAuthenticator

        if self._auth is not None:
            return
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("agent.net.security.zap"))
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(
            self.allowed_public_keys))
        self._auth = auth
        log.info("CURVE on: %d allowed peer key(s), own public key %s",
                 len(self.allowed_public_keys), self.public_key.decode("ascii"))

    def stop(self) -> None:
        """Stop the authenticator (after the sockets are closed)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

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
    """Credentials provider for pyzmq's authenticator: a fixed set of z85 public keys.

    A refused peer reconnects every few hundred milliseconds, so each key is logged at most
    once per ``log_interval_s`` (with the number of refusals since).
    """

    def __init__(self, keys: frozenset, log_interval_s: float = 60.0) -> None:
        self.keys = keys
        self.log_interval_s = log_interval_s
        self._refused: Dict[bytes, List[float]] = {}  # key -> [last log time, refusals since]

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        now = time.monotonic()
        entry = self._refused.setdefault(key, [-1e18, 0])
        entry[1] += 1
        if now - entry[0] >= self.log_interval_s:
            log.warning("CURVE handshake refused for unknown public key %s (%d refusal(s))",
                        key.decode("ascii", "replace"), entry[1])
            entry[0], entry[1] = now, 0
        return False


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
        if listed != public:
            raise SecurityError("public_key_path %s does not match the public key inside "
                                "secret_key_path %s" % (cfg.public_key_path, cfg.secret_key_path))
    allowed = []  # type: List[bytes]
    for i, peer in enumerate(cfg.peers):
        if not peer.public_key:
            raise SecurityError("security = \"curve\": peer %r has no public_key" % peer.id)
        allowed.append(_named("peers[%d].public_key (peer %r)" % (i, peer.id), load_public_key,
                              peer.public_key))
    keys_dir = getattr(cfg, "allowed_keys_dir", "")
    if keys_dir:
        allowed.extend(_named("allowed_keys_dir", load_allowed_keys, keys_dir))
    if not allowed:
        raise SecurityError("security = \"curve\" needs at least one peer with a public_key")
    return CurveSecurity(public, secret, allowed)


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
    is ``allowed_keys`` (the clients' public keys), apart from the fleet's. ``on_refused()`` is
    called, on the authenticator's thread, for every refused handshake. Call after
    ``security.start(ctx)`` and before ``sock.bind``.
    """
    import zmq

    if not isinstance(security, CurveSecurity) or security._auth is None:
        raise SecurityError("a CURVE client socket needs security = \"curve\" (started)")
    allow = _AllowList(frozenset(_check_z85(k, "client public key") for k in allowed_keys))
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


# ---------------------------------------------------------------- key files

def generate_keypair(directory: str, name: str, overwrite: bool = False) -> Tuple[str, str]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ZeroMQ's certificate format.

    The secret file is created with mode 0600 from the start (never briefly world-readable).
    Returns (public_file, secret_file). Existing files are refused unless ``overwrite``.
    """
    import zmq

    if not name or os.sep in name or name.startswith("."):
        raise SecurityError("key name %r must be a plain file name (e.g. the node id)" % name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public_file = os.path.join(directory, name + ".key")
    secret_file = public_file + "_secret"
    if not overwrite:
        for path in (public_file, secret_file):
            if os.path.exists(path):
                raise SecurityError("%s already exists; pass --force to replace it" % path)
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now()
    _write_key_file(secret_file, 0o600, _SECRET_BANNER.format(now), public, secret)
    _write_key_file(public_file, 0o644, _PUBLIC_BANNER.format(now), public, None)
    return public_file, secret_file


_SECRET_BANNER = """#   ****  Generated on {0} by edge-agent  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""
_PUBLIC_BANNER = """#   ****  Generated on {0} by edge-agent  ****
#   ZeroMQ CURVE Public Certificate
#   Copy this file to the peers that must accept this node (their allowed_keys).

"""


def _write_key_file(path: str, mode: int, banner: str, public: bytes,
                    secret: Optional[bytes]) -> None:
    text = banner + "metadata\ncurve\n    public-key = \"%s\"\n" % public.decode("ascii")
    if secret is not None:
        text += "    secret-key = \"%s\"\n" % secret.decode("ascii")
    write_atomic(path, text.encode("ascii"), perms=mode)


def _read_key_file(path: str) -> Tuple[Optional[bytes], Optional[bytes]]:
    # non-blocking and bounded: a FIFO or device in a key's place must not hang the start-up
    try:
        data = read_bounded(path, "key file", KEY_FILE_MAX_BYTES)
    except FileFault as exc:
        raise SecurityError(str(exc)) from None
    public = secret = None
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"public-key") and b"=" in line:
            public = line.split(b"=", 1)[1].strip(b" \t'\"")
        elif line.startswith(b"secret-key") and b"=" in line:
            secret = line.split(b"=", 1)[1].strip(b" \t'\"")
    return public, secret


def check_secret_key_permissions(path: str, uid: Optional[int] = None) -> None:
    """Refuse a secret key file that others could read or that another user owns."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecurityError("secret key file %s: %s" % (path, exc.strerror or exc))
    if not stat.S_ISREG(st.st_mode):
        raise SecurityError("secret key file %s is not a regular file" % path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecurityError("secret key file %s has mode %04o; it must be readable by its owner "
                            "only (run: chmod 600 %s)" % (path, mode, path))
    if st.st_uid != uid:
        raise SecurityError("secret key file %s is owned by uid %d, but the agent runs as uid %d "
                            "(run: chown %d %s)" % (path, st.st_uid, uid, uid, path))


def load_secret_key_file(path: str) -> Tuple[bytes, bytes]:
    """Return (public, secret) from a ``.key_secret`` file after checking its permissions."""
    check_secret_key_permissions(path)
    public, secret = _read_key_file(path)
    if not secret or not public:
        raise SecurityError("%s holds no %s; give the NAME.key_secret file from `edge-agent keys "
                            "generate`" % (path, "secret-key" if not secret else "public-key"))
    return _check_z85(public, path), _check_z85(secret, path)


def load_public_key(spec: str, base_dir: str = ".") -> bytes:
    """A peer's public key from a z85 string or from a ``.key`` / ``.key_secret`` file."""
    path = _resolve(spec, base_dir)
    if not os.path.lexists(path):
        if _looks_like_z85(spec):
            return spec.encode("ascii")
        raise SecurityError(_neither_key_nor_file(spec, path))
    _refuse_writable_by_others(path)
    public, _ = _read_key_file(path)
    if not public:
        raise SecurityError("%s holds no public-key line" % path)
    return _check_z85(public, path)


def load_allowed_keys(entry: str, base_dir: str = ".") -> List[bytes]:
    """Public keys from one allow-list entry: a z85 key, a key file, or a directory of *.key."""
    path = _resolve(entry, base_dir)
    if os.path.isdir(path):
        _refuse_writable_by_others(path)
        names = sorted(n for n in os.listdir(path) if n.endswith(".key"))
        if not names:
            raise SecurityError("allowed_keys directory %s holds no *.key files" % path)
        return [load_public_key(os.path.join(path, n)) for n in names]
    return [load_public_key(entry, base_dir)]


def _neither_key_nor_file(spec: str, path: str) -> str:
    """Why ``spec`` is no key: a z85 key of the wrong length, a bad character, or a lost file."""
    looks_inline = all(ch in _Z85_CHARS for ch in spec) and not spec.endswith((".key",
                                                                              ".key_secret"))
    if looks_inline and len(spec) != _Z85_KEY_LEN and abs(len(spec) - _Z85_KEY_LEN) <= 8:
        return ("%r is %d characters long: a z85 public key has exactly %d (a character lost or "
                "added when copying?), and no file of that name exists"
                % (spec, len(spec), _Z85_KEY_LEN))
    if looks_inline and len(spec) == _Z85_KEY_LEN:
        return ("%r is 40 characters but not a valid z85 key (copy it again from the peer's "
                "NAME.key file)" % spec)
    return ("no key file %s (give a 40-character z85 public key or the path of an existing "
            "NAME.key file)" % path)


def _refuse_writable_by_others(path: str) -> None:
    # Whoever can write the allow-list can let any key in.
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecurityError("public key %s: %s" % (path, exc.strerror or exc))
    if stat.S_IMODE(st.st_mode) & 0o022:
        raise SecurityError("%s is writable by group or others (mode %04o); anyone could add a key "
                            "(run: chmod go-w %s)" % (path, stat.S_IMODE(st.st_mode), path))


def _resolve(path: str, base_dir: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _looks_like_z85(text: str) -> bool:
    # z85 uses "." and "/" too, so a key is told from a path by length and decodability.
    if len(text) != _Z85_KEY_LEN:
        return False
    try:
        _check_z85(text, "key")
    except SecurityError:
        return False
    return True


def _check_z85(key, what: str) -> bytes:
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    if not isinstance(key, bytes) or len(key) != _Z85_KEY_LEN:
        raise SecurityError("%s is not a 40-character z85 CURVE key" % what)
    from zmq.utils import z85

    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError, TypeError):
        raise SecurityError("%s is not a valid z85 CURVE key" % what) from None
    return key
