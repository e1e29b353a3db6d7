"""``edge-agent run --config node.toml``: run one agent (source or worker) until SIGTERM.

The node is built and served by ``agent.node.build`` (start-up order, shutdown and draining
are described there); this command reads the config and tells systemd how things go.

SIGTERM or SIGINT before the agent serves (``systemctl stop`` while it loads its engine) ends it
with one line saying what start-up had done and that no task was taken, and exit status 0, the
loop's own after a stop (``agent.ops.startstop``); SIGHUP never ends it (``agent.ops.hangup``).

A fault that keeps the agent from starting (config, key, state or model files, addresses) is
printed as one line naming the field or file and the fix, and the command exits with
``EXIT_CONFIG`` (78): the systemd unit does not restart on it (``RestartPreventExitStatus``),
since a restart cannot fix a file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from agent.errors import EXIT_CONFIG, UsageError

HELP = "run one agent (source or worker) from a node config until SIGTERM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--config", required=True, metavar="NODE.toml",
                        help="node config file (see docs/formats.md, 'Node config')")
    parser.add_argument("--parent-pid", type=int, default=0, metavar="PID",
                        help="stop (as on SIGTERM) when process PID, the one starting this "
                             "agent, exits; the testbed passes its own pid (Linux)")


def _fail(text: str) -> int:
    from agent.cli import error_line, stderr_is_journal

    # journald's error priority under systemd: `journalctl -p err` shows why it did not start
    print(error_line("run", text, stderr_is_journal()), file=sys.stderr)
    return EXIT_CONFIG


def run(args: argparse.Namespace) -> int:
    """Load the node config and serve until SIGTERM/SIGINT; ``EXIT_CONFIG`` on a start-up fault;
    0 after a stop during start-up, as after the loop's."""
    from agent.ops.hangup import Hangups
    from agent.ops.startstop import StartupSignals, StoppedStarting

    # first, before the imports below take their second or more: a stop from now on is said
    starting = StartupSignals().arm()
    hangups = None
    try:
        hangups = Hangups().install()
        return _run(args, starting, hangups)
    except StoppedStarting as exc:
        logging.getLogger("agent.run").warning("%s", exc)
        return int(exc.exit_status)
    finally:
        if hangups is not None:
            hangups.close()
        starting.disarm()


def _run(args: argparse.Namespace, starting, hangups) -> int:
    # imported here, not at the top: `edge-agent --help` imports every command module, and the
    # node pulls in numpy, zmq and the engines (0.35 s against 0.03 s)
    from agent.config.node import load_config
    from agent.node.build import serve
    from agent.ops.malloc import tune_allocator
    from agent.ops.openfiles import raise_open_files
    from agent.ops.sdnotify import Notifier

    tune_allocator()  # big tensors: reuse receive buffers instead of faulting them in again
    raise_open_files()  # every peer and client connection takes descriptors
    notifier = _Started(Notifier.from_environ(os.environ))
    try:
        if args.parent_pid:
            from agent.ops.parent import stop_with_parent

            why = stop_with_parent(args.parent_pid)
            if why:
                print("run: --parent-pid: %s; the agent will not stop with its parent" % why,
                      file=sys.stderr)
        cfg = load_config(args.config)
        starting.step("config read")
        try:
            return serve(cfg, notifier, starting=starting, hangups=hangups)
        except KeyboardInterrupt:
            notifier.stopping()  # a stop during start-up: systemd is told it is one
            raise
    except UsageError as exc:
        if notifier.ready_sent:  # not a start-up fault: let the service manager restart
            raise
        return _fail(_naming(args.config, str(exc)))
    except OSError as exc:  # a file the checks did not foresee: still one line, no restart loop
        if notifier.ready_sent:
            raise
        where = exc.filename or args.config
        return _fail(_naming(args.config, "cannot start: %s: %s" % (where, exc.strerror or exc)))


def _naming(config: str, text: str) -> str:
    """``text`` led by the config file's path, unless it names that file first already (a
    fleet's journals hold many nodes' lines: each says whose config is at fault)."""
    return text if text.startswith(config + ":") else "%s: %s" % (config, text)


class _Started:
    """The notifier, remembering whether READY was sent (after it, faults are not start-up)."""

    def __init__(self, notifier) -> None:
        self._notifier = notifier
        self.ready_sent = False

    def ready(self, status: str = "") -> bool:
        self.ready_sent = True
        return self._notifier.ready(status)

    def __getattr__(self, name: str):
        return getattr(self._notifier, name)
