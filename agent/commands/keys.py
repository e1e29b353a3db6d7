"""``edge-agent keys``: CURVE keypairs for the agents' ZeroMQ sockets."""

from __future__ import annotations

import argparse
import socket

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
        name = args.name or socket.gethostname().split(".")[0]
        public_file, secret_file = generate_keypair(args.dir, name, overwrite=args.force)
        print("public key: %s  (copy it into the other nodes' allowed_keys_dir)" % public_file)
        print("secret key: %s  (mode 0600, keep on this device only)" % secret_file)
        print(load_public_key(public_file).decode("ascii"))
        return 0
    if args.file.endswith("_secret"):
        public, _ = load_secret_key_file(args.file)  # also checks its permissions
    else:
        public = load_public_key(args.file)
    print(public.decode("ascii"))
    return 0
