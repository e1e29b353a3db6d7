"""``edge-agent run --config node.toml``: run one agent (source or worker) until SIGTERM.

The node is built and served by ``agent.node.build`` (start-up order, shutdown and draining
are described there); this command reads the config and tells systemd how things go.
"""

from __future__ import annotations

import argparse
import os

HELP = "run one agent (source or worker) from a node config until SIGTERM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--config", required=True, metavar="NODE.toml",
                        help="node config file (see docs/formats.md, 'Node config')")


def run(args: argparse.Namespace) -> int:
    """Load the node config and serve until SIGTERM/SIGINT."""
    # imported here, not at the top: `edge-agent --help` imports every command module, and the
    # node pulls in numpy, zmq and the engines (0.35 s against 0.03 s)
    from agent.config.node import load_config
    from agent.node.build import serve
    from agent.ops.sdnotify import Notifier

    return serve(load_config(args.config), Notifier.from_environ(os.environ))
