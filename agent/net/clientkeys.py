"""The public keys a source's CURVE client socket lets in, read again on SIGHUP.

``AllowedClients`` holds the allow-list of ``client_keys_dir`` as {z85 public key: NAME} (from
its ``NAME.key`` files). Three readers share it:

- the ZAP handler of the client domain (``key in keys``, on the authenticator's thread): a key
  added is let in at its next handshake, a key removed is refused at its next one;
- the transport (``tag``, on the loop's thread), for every client message: ZeroMQ authenticates
  a connection only at its handshake, so a key removed from the folder would go on being served
  on the connection it already holds; the routing id handed to the loop is a ``ClientId`` that
  says whether the message's ``User-Id`` (its key) is still allowed, and the key's name (on a
  plain client socket, ``plain_id``: a ``ClientId`` without a key's name, never revoked);
- ``reload`` (on SIGHUP, ``agent.ops.hangup``): reads the folder again and swaps the mapping in
  one assignment, so a reader sees the old list or the new one, never half of each. A folder
  that cannot be read, is empty or holds a bad file keeps the list in force (one WARNING).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent.net.keyfiles import SecurityError, load_allowed_keys, load_public_key

log = logging.getLogger("agent.run")  # a serving agent's own lines are logged under this name


class ClientId(bytes):
    """A client connection's routing id (as the ROUTER gave it, for the answer), with the
    ``key_name`` of the key it authenticated with ("" when unknown) and ``revoked``: that key
    is no longer in ``client_keys_dir``."""

    key_name = ""
    revoked = False


def plain_id(frames: Sequence[Any]) -> ClientId:
    """The routing id of a message on a plain (keyless, local) client socket as a ``ClientId``
    without a key's name: whatever routing id a client sets (a worker's name, say), every such
    connection is one sender, ``a client`` (``agent.node.rejects``), never revoked."""
    return ClientId(frames[0].bytes)


def read_client_keys(folder: str) -> Dict[str, str]:
    """{z85 public key: NAME} of the ``NAME.key`` files in ``folder`` (a single key file: its
    name; an inline key: ""); ``SecurityError`` for a missing or empty folder, a folder others
    may write, or a file that holds no public key. A key in two files keeps the first name."""
    if os.path.isdir(folder) and not any(n.endswith(".key") for n in os.listdir(folder)):
        raise SecurityError("client_keys_dir %s holds no *.key files" % folder)
    keys = load_allowed_keys(folder)  # the folder's checks, and every file's
    if not os.path.isdir(folder):
        name = os.path.basename(folder)
        name = name[:-len(".key")] if name.endswith(".key") else ""
        return {k.decode("ascii"): name for k in keys}
    names: Dict[str, str] = {}
    for n in sorted(n for n in os.listdir(folder) if n.endswith(".key")):
        names.setdefault(load_public_key(os.path.join(folder, n)).decode("ascii"),
                         n[:-len(".key")])
    if not names:  # emptied between the two reads
        raise SecurityError("client_keys_dir %s holds no *.key files" % folder)
    return names


class AllowedClients:
    """The client allow-list of one source (module docstring); raises ``SecurityError`` when
    ``folder`` cannot be read at start."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.names = read_client_keys(folder)  # replaced whole, never changed in place
        self._former: Dict[str, str] = {}  # keys removed by a reload -> their names

    def __len__(self) -> int:
        """How many keys are in force."""
        return len(self.names)

    def __contains__(self, key: Any) -> bool:
        """True for a z85 key (bytes, as the ZAP handler gives it, or str) now allowed."""
        if isinstance(key, (bytes, bytearray)):
            key = bytes(key).decode("ascii", "replace")
        return key in self.names

    def reload(self) -> Optional[Tuple[List[str], List[str]]]:
        """Read the folder again and put its keys in force: (names added, names removed), and
        one INFO line; None, with one WARNING, when it cannot be read (the keys stay)."""
        old = self.names
        try:
            new = read_client_keys(self.folder)
        except Exception as exc:  # a reload never ends the agent: the old list stays
            log.warning("client keys not reloaded: %s; the %d key(s) read before stay in "
                        "force", _named(str(exc) or type(exc).__name__, self.folder), len(old))
            return None
        self.names = new  # one assignment: the ZAP thread reads the old dict or the new one
        added = sorted(name or k for k, name in new.items() if old.get(k) != name)
        removed = sorted(name or k for k, name in old.items() if new.get(k) != name)
        former = dict(self._former)
        former.update(old)
        self._former = {k: name for k, name in former.items() if k not in new}
        change = "; ".join(what + ": " + ", ".join(names) for what, names in
                           (("added", added), ("removed", removed)) if names)
        log.info("client keys reloaded from %s: %d keys (%s)", self.folder, len(new),
                 change or "unchanged")
        return added, removed

    def tag(self, frames: Sequence[Any]) -> ClientId:
        """The routing id of a client message (``frames`` as received, zero-copy) as a
        ``ClientId`` naming its key and saying whether that key is still allowed (a message
        without a ``User-Id`` is taken as revoked: never admitted)."""
        ident = ClientId(frames[0].bytes)
        try:
            key = frames[-1].get("User-Id")
        except Exception:  # no ZAP property on this message (zmq.ZMQError)
            key = None
        names = self.names  # read once: a reload may swap it meanwhile
        name = names.get(key) if key is not None else None
        if name is None:
            ident.revoked = True
            name = self._former.get(key, "") if key is not None else ""
        ident.key_name = name
        return ident



def _named(problem: str, folder: str) -> str:
    """``problem`` with ``folder`` in it (what a reload read names the file or folder at fault;
    anything else gets the folder in front)."""
    return problem if folder in problem else "%s: %s" % (folder, problem)
