"""CURVE key files: reading and checking them (the one home of key-file rules; a new pair is
made by ``agent.net.keyfile_create``).

Key files use ZeroMQ's certificate format (as written by ``zmq.auth.create_certificates``):
``NAME.key`` holds the public key, ``NAME.key_secret`` both keys. A secret key file must be
owned by the user running the agent and readable by nobody else (0600 or 0400), its
secret-key line must belong to its public-key line, and its folder (and, for a symbolic link,
its target's folder: a link is allowed, with a warning) must not be writable by group or
others, since whoever can write the folder can swap the key. Files are read bounded and
without blocking (a FIFO or device is refused, never waited on). A peer's public key may also
be given inline as its 40-character z85 text; no error message shows a value that may be a
secret key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
from typing import List, Optional, Tuple

from agent.errors import UsageError
from agent.ops.files import KEY_FILE_MAX_BYTES, FileFault, read_bounded

log = logging.getLogger("agent.net.security")

_Z85_KEY_LEN = 40
_Z85_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       ".-:+=^!/*?&<>()[]{}@%$#")


class SecurityError(UsageError):
    """A key file or key setting is wrong (missing, malformed, unsafe permissions)."""


# a node's own key files: a key pasted there in place of a path is refused, never shown
KEY_PATH_FIELDS = ("secret_key_path", "public_key_path")
_INLINE_SECRET = ("the value looks like an inline key (40 z85 characters), not a file: give the "
                  "path of NAME.key_secret (value not shown)")
_INLINE_PUBLIC = ("no key file: the value ends in 40 z85 characters, like an inline key (value "
                  "not shown); give the path of an existing NAME.key file")


def read_key_file(path: str) -> Tuple[Optional[bytes], Optional[bytes]]:
    """(public, secret) key lines of a file (None: absent); read bounded, never blocking."""
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
    """Refuse a secret key file that others could read, that another user owns, or whose
    folder (or, for a symbolic link, its target's) group or others could write."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):  # the link is there, its target is not
            raise SecurityError("secret key file %s is a symbolic link to %s: %s"
                                % (path, os.path.realpath(path), exc.strerror or exc)) from None
        if not os.path.lexists(path) and looks_like_inline_key(path):
            raise SecurityError(_INLINE_SECRET) from None
        raise SecurityError("secret key file %s: %s%s" % (
            path, exc.strerror or exc, _closed_folder(path, uid))) from None
    if not stat.S_ISREG(st.st_mode):
        raise SecurityError("secret key file %s is not a regular file" % path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecurityError("secret key file %s has mode %04o; it must be readable by its owner "
                            "only (run: chmod 600 %s)" % (path, mode, path))
    if st.st_uid != uid:
        raise SecurityError("secret key file %s is owned by uid %d, but the agent runs as uid %d "
                            "(run: chown %d %s)" % (path, st.st_uid, uid, uid, path))
    folders = [os.path.dirname(os.path.abspath(path))]
    if os.path.islink(path):
        folders.append(os.path.dirname(os.path.realpath(path)))
        if path not in _links_told:  # once per file: doctor and run may both load it
            _links_told.add(path)
            log.warning("secret key file %s is a symbolic link to %s: accepted (the target and "
                        "both folders are checked); a link can be pointed elsewhere by whoever "
                        "can write its folder, so prefer the file itself", path,
                        os.path.realpath(path))
    for folder in folders:
        refuse_open_folder(path, folder, uid)


_links_told = set()  # symbolic links to secret keys already warned about


def _closed_folder(path: str, uid: int) -> str:
    """The folder on the way to ``path`` this process may not enter and its fix ("" if none):
    the key's own is given to ``uid`` with its files (``sudo keys generate`` makes it 0700)."""
    folders, here = [], os.path.dirname(os.path.abspath(path))
    while here not in folders:
        folders.insert(0, here)
        here = os.path.dirname(here)
    for folder in folders:
        if not os.access(folder, os.X_OK):
            try:
                st = os.stat(folder)
            except OSError:
                return ""
            fix = ("chown -R %d %s" % (uid, folder) if folder == folders[-1] else
                   "chmod o+x %s, or keep the key in a folder uid %d may enter" % (folder, uid))
            return ": uid %d may not enter folder %s, owner uid %d mode %04o (run: %s)" % (
                uid, folder, st.st_uid, stat.S_IMODE(st.st_mode), fix)
    return ""


def refuse_open_folder(path: str, folder: str, uid: int) -> None:
    """Refuse a secret key in a folder group or others may write (they could swap the key,
    as anyone who could read it could copy it: both are refused alike). A sticky folder
    (/tmp) lets nobody else rename or remove the file; a group that is the owner's own
    (a user-private group with no other member) adds nobody."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise SecurityError("secret key file %s: its folder %s: %s"
                            % (path, folder, exc.strerror or exc)) from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_ISVTX or not mode & 0o022:
        return
    if mode & 0o002:
        who = "others"
    elif _private_group(st.st_gid, uid):
        return
    else:
        who = "group %s" % _group_name(st.st_gid)
    raise SecurityError("secret key file %s is in folder %s, which %s may write (mode %04o): "
                        "they could swap the key (run: chmod go-w %s)"
                        % (path, folder, who, mode, folder))


def _private_group(gid: int, uid: int) -> bool:
    """True when ``gid`` is the primary group of ``uid`` and has no other member."""
    try:
        import grp
        import pwd
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return user.pw_gid == gid and all(m == user.pw_name for m in group.gr_mem)


def _group_name(gid: int) -> str:
    try:
        import grp
        return "%s (gid %d)" % (grp.getgrgid(gid).gr_name, gid)
    except (ImportError, KeyError):
        return "gid %d" % gid


def load_secret_key_file(path: str) -> Tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file, checked: its content, then permissions.

    The content first: a file that is no secret key at all (a public ``NAME.key`` in its
    place) is named as such, not sent to a chmod that would not help. A file that cannot be
    read is explained by its owner and mode when they are the cause."""
    try:
        public, secret = read_key_file(path)
    except SecurityError:
        check_secret_key_permissions(path)  # e.g. "owned by uid 0 ... (run: chown ...)"
        raise
    if not secret or not public:
        raise SecurityError("%s holds no %s; give the NAME.key_secret file from `edge-agent keys "
                            "generate`" % (path, "secret-key" if not secret else "public-key"))
    public, secret = _check_z85(public, path), _check_z85(secret, path)
    import zmq

    if zmq.curve_public(secret) != public:  # the node would be cut off without a word
        raise SecurityError("%s: its secret-key line does not belong to its public-key line "
                            "(edited, or put together from two pairs); make a new pair "
                            "(`edge-agent keys generate --force`) and give the peers its public "
                            "key" % path)
    check_secret_key_permissions(path)
    return public, secret


def is_z85_key(value: str) -> bool:
    """True when ``value`` as given is 40 z85 characters: a key, not a key file's path."""
    return len(value) == _Z85_KEY_LEN and _looks_like_z85(value)


def looks_like_inline_key(value: str) -> bool:
    """True when ``value`` (a path as the config resolved it: the config's folder joined with
    what was given) ends in a z85 key right after an existing folder: a key given where a key
    file's path belongs, possibly a secret one, so never to be shown. A key file's name
    (``NAME.key``, ``NAME.key_secret``) never passes."""
    if is_z85_key(value):  # as given (not resolved)
        return True
    tail, head = value[-_Z85_KEY_LEN:], value[:-_Z85_KEY_LEN]
    if value.endswith((".key", ".key_secret")) or not head.endswith(os.sep):
        return False  # a key's "/" splits it into folders: its head still ends at the config's
    return os.path.isdir(head) and _looks_like_z85(tail)


def inline_key_refusal(field: str, path: str) -> Optional[str]:
    """Why key-file field ``field`` (one of ``KEY_PATH_FIELDS``), resolved to ``path`` as a
    config resolves it (a value ``is_z85_key`` accepts joined unnormalised), is refused when it
    names no file but reads as an inline key: the words an agent's start-up says, the value not
    shown; None when it is a path (a file of that name, or no key's shape)."""
    if os.path.lexists(path) or not looks_like_inline_key(path):
        return None
    return _INLINE_SECRET if field == "secret_key_path" else _INLINE_PUBLIC


def load_public_key(spec: str, base_dir: str = ".") -> bytes:
    """A peer's public key from a z85 string or from a ``.key`` / ``.key_secret`` file."""
    path = _resolve(spec, base_dir)
    if not os.path.lexists(path):
        if _looks_like_z85(spec):
            return spec.encode("ascii")
        raise SecurityError(_neither_key_nor_file(spec, path))
    if not os.path.isfile(path):  # a device or a FIFO: its mode says nothing about a key
        raise SecurityError("public key %s is not a regular file (give a NAME.key file from "
                            "`edge-agent keys generate`)" % path)
    _refuse_writable_by_others(path)
    public, _ = read_key_file(path)
    if not public:
        raise SecurityError("%s holds no public-key line" % path)
    return _check_z85(public, path)


def peer_key_spec(spec: str, base_dir: str) -> str:
    """A peer's ``public_key`` as the config gives it: a z85 key as it is, a key file relative
    to the config's folder (``base_dir``) as that path (a key file there named like a key wins)."""
    if not spec or os.path.isabs(os.path.expanduser(spec)):
        return spec
    path = _resolve(spec, base_dir)
    if os.path.lexists(path):
        return path
    # missing: a path when it reads as one (its error then names the config-relative file),
    # else a key as given (a malformed one's error counts its characters)
    named = os.sep in spec or spec.endswith((".key", ".key_secret"))
    return path if named and not _looks_like_z85(spec) else spec


def load_allowed_keys(entry: str, base_dir: str = ".") -> List[bytes]:
    """Public keys from one allow-list entry: a z85 key, a key file, or a directory of *.key
    (a missing path that reads as neither a key nor a key file is a missing folder)."""
    path = _resolve(entry, base_dir)
    if os.path.isdir(path):
        _refuse_writable_by_others(path)
        names = sorted(n for n in os.listdir(path) if n.endswith(".key"))
        if not names:
            raise SecurityError("allowed_keys directory %s holds no *.key files" % path)
        return [load_public_key(os.path.join(path, n)) for n in names]
    if not os.path.lexists(path) and not entry.endswith((".key", ".key_secret")) \
            and _neither_key_nor_file(entry, path).startswith("no key file " + path):
        raise SecurityError("no folder %s: copy the public keys it allows there (NAME.key "
                            "files: a render's fleet/ folder; clients/ for client_keys_dir)" % path)
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
    if looks_like_inline_key(path):  # a key mangled into a path: perhaps a secret one
        return _INLINE_PUBLIC
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
    except (ValueError, KeyError, IndexError, TypeError, struct.error):  # struct: > 2**32
        raise SecurityError("%s is not a valid z85 CURVE key" % what) from None
    return key


def key_fingerprint(key: bytes) -> str:
    """The first 12 hex digits of a z85 key's SHA-256: how log lines name a key whose value
    they must not show (it may be a secret in the wrong place); ``keys show`` prints it too."""
    return hashlib.sha256(bytes(key).strip()).hexdigest()[:12]
