"""The ``edge-agent`` command line: one console script, one subcommand per module.

Each subcommand lives in ``agent/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep heavy imports
(onnxruntime, zmq, scipy, matplotlib) inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from agent import __version__
from agent.errors import UsageError

# Order shown in --help; a name whose module is absent is simply not offered.
COMMANDS = (
    "build",
    "profile",
    "calibrate",
    "run",
    "plan",
    "scenario",
    "simulate",
    "testbed",
    "fleet",
    "status",
    "submit",
    "report",
    "keys",
    "install",
)


def _load(name: str):
    try:
        return importlib.import_module("agent.commands." + name)
    except ModuleNotFoundError as exc:
        if exc.name == "agent.commands." + name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Collaborative early-exit DNN inference on a fleet of edge devices.",
    )
    parser.add_argument("--version", action="version", version="edge-agent " + __version__)
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except UsageError as exc:
        print("edge-agent %s: error: %s" % (args.command, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
