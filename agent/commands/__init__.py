"""Subcommands of ``edge-agent``; see ``agent.cli`` for the module contract."""

import argparse


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: an integer in 0..2^32-1 (numpy's generators take no other,
    and a negative one raised from deep inside them)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError("must be an integer in 0..4294967295, got %r" % text)
    return value
