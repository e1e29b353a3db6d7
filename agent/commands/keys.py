"""``edge-agent keys``: CURVE keypairs for the agents' ZeroMQ sockets."""

from __future__ import annotations

import argparse
import socket
from typing import Tuple

HELP = "generate or show CURVE keypairs (NAME.key public, NAME.key_secret private)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_action", metavar="ACTION")
    sub.required = True
    gen = sub.add_parser("generate", help="write NAME.key (0644) and NAME.key_secret (0600)")
    gen.add_argument("--dir", default=".", help="directory for the key files (default: .)")
    gen.add_argument("--name", default=None,
                     help="file name stem, normally the node id (default: this host's name)")
    gen.add_argument("--force", action="store_true", help="replace existing key files")
    show = sub.add_parser("show", help="print the public key (z85) held in a key file")
    show.add_argument("file", help="a NAME.key or NAME.key_secret file")


def run(args: argparse.Namespace) -> int:
    from agent.net.security import generate_keypair, load_public_key, load_secret_key_file

    if args.keys_action == "generate":
        import os

        name = args.name if args.name is not None else socket.gethostname().split(".")[0]
        replaced = args.force and os.path.lexists(os.path.join(args.dir, name + ".key"))
        public_file, secret_file = _generate(args, generate_keypair)
        print("public key: %s  (copy it into the other nodes' allowed_keys_dir)" % public_file)
        print("secret key: %s  (mode 0600, keep on this device only)" % secret_file)
        if replaced:  # the old key is still in the peers' configs and allow-lists
            print("replaced the old pair: put the new public key in every peer's [[peers]] "
                  "public_key and allowed_keys_dir, then restart every agent that talks to "
                  "this node, and this node last")
        print(load_public_key(public_file).decode("ascii"))
        return 0
    import sys

    from agent.net.keyfiles import key_fingerprint, read_key_file

    secret_inside = False
    if args.file.endswith("_secret"):
        public, _ = load_secret_key_file(args.file)  # also checks its permissions
    else:
        public = load_public_key(args.file)
        # a NAME.key_secret copied or renamed: a file named like a public key gets shared
        secret_inside = read_key_file(args.file)[1] is not None
    print(public.decode("ascii"))
    print("fingerprint %s (log lines name keys by it)" % key_fingerprint(public), file=sys.stderr)
    if secret_inside:
        print("WARNING: %s holds a SECRET key (a NAME.key_secret copied or renamed?): do not "
              "share it or copy it to other nodes; give them the public key above or the "
              "NAME.key of its pair" % args.file, file=sys.stderr)
    return 0


def _generate(args: argparse.Namespace, generate_keypair) -> Tuple[str, str]:
    """Check --name (the node-id rule: it names the node's key files) and --dir, then write the
    pair. A failed write leaves no half-written pair (a failed --force says what it left when
    it could not put the old pair back) and removes nothing it did not make:
    ``generate_keypair`` removes what it put in place itself (files that were not there when
    this run looked may be another run's pair, made meanwhile)."""
    import os

    from agent.config.checks import check_node_id
    from agent.errors import UsageError
    from agent.ops.atomic import SetTorn
    from agent.ops.files import check_output_dir, check_output_file, output_errors

    given = args.name is not None  # --name "" is a mistake, not a request for the default
    name = args.name if given else socket.gethostname().split(".")[0]
    check_node_id(name, "--name" if given else "--name (default: this host's name)", UsageError)
    check_output_dir(args.dir, "--dir")
    for path in (os.path.join(args.dir, name + ext) for ext in (".key", ".key_secret")):
        check_output_file(path, "--dir")
    _refuse_open_dir(args.dir, name)
    with output_errors("--dir", args.dir):
        try:
            return generate_keypair(args.dir, name, overwrite=args.force)
        except SetTorn as exc:  # a secret file that does not match its public file is no key
            exc.strerror = ("%s; make a new pair (--force again) once the folder takes writes"
                            % exc.strerror)
            raise


def _refuse_open_dir(directory: str, name: str) -> None:
    """Refuse, before anything is written, a --dir that group or others may write: the agent
    (and ``keys show``) refuse a secret key there, since they could swap it, so the pair would
    be of no use (a missing --dir is made 0700)."""
    import os

    from agent.errors import UsageError
    from agent.net.keyfiles import SecurityError, refuse_open_folder

    if not os.path.isdir(directory):
        return
    try:
        refuse_open_folder(os.path.join(directory, name + ".key_secret"),
                           os.path.abspath(directory), os.geteuid())
    except SecurityError as exc:
        raise UsageError("--dir: %s; the agent refuses a secret key there: nothing written"
                         % exc) from None
