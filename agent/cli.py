"""The ``edge-agent`` command line: one console script, one subcommand per module.

Each subcommand lives in ``agent/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules keep heavy imports
(onnxruntime, zmq, scipy, matplotlib) inside ``run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import signal
import sys
import textwrap
from typing import List, Mapping, Optional

from agent import __version__
from agent.commands.interrupts import forget_caught_interrupt, report_interrupt
from agent.errors import EXIT_USAGE, UsageError, missing_module_hint

# Order shown in --help; a name whose module is absent is simply not offered.
COMMANDS = (
    "heads",
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
    "doctor",
)

# syslog priority of each logging level: journald reads a "<N>" prefix on a line of a service's
# stderr as the line's priority, so `journalctl -p err` finds the errors
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                   logging.CRITICAL: 2}

def _load(name: str):
    try:
        return importlib.import_module("agent.commands." + name)
    except ModuleNotFoundError as exc:
        if exc.name == "agent.commands." + name:
            return None
        raise


class _Version(argparse.Action):
    """``--version``: the package's version and the wire protocol it speaks (agents of one
    fleet must speak one), the wire contract imported only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):
        from agent.protocol.wire import VERSION

        print("edge-agent %s (wire protocol %d)" % (__version__, VERSION))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Collaborative early-exit DNN inference on a fleet of edge devices.",
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the version and its wire protocol, and exit")
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


def short_usage() -> str:
    """What a bare ``edge-agent`` prints (``--help`` prints the whole page): one usage line,
    the commands with their one-line help, and where to read more."""
    offered = [(name, module.HELP) for name, module in ((n, _load(n)) for n in COMMANDS)
               if module is not None]
    width = max(len(name) for name, _ in offered)
    lines = ["usage: edge-agent [--version] [--log-level LEVEL] COMMAND [ARGS]", "",
             "commands:"]
    # one screen line per command (80 columns): the full text is in each command's --help
    lines += ["  %-*s  %s" % (width, name, textwrap.shorten(text, 76 - width, placeholder=" ..."))
              for name, text in offered]
    lines += ["", "See 'edge-agent COMMAND --help' for a command's options,",
              "'edge-agent --help' for the global ones."]
    return "\n".join(lines) + "\n"


def stderr_is_journal(environ: Mapping[str, str] = os.environ, stream=None) -> bool:
    """True when ``stream`` (stderr) is connected to journald: systemd sets ``JOURNAL_STREAM``
    to the device and inode of that stream, which a redirection changes."""
    value = environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(v) for v in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``: the syslog priority prefix journald parses; no time stamp
    (journald adds its own)."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = SYSLOG_PRIORITY.get(record.levelno, 3 if record.levelno > logging.ERROR else 7)
        # a multi-line message (a traceback) keeps its priority on every line
        return "\n".join("<%d>%s" % (prio, line) for line in super().format(record).splitlines())


def setup_logging(level: str, stream=None, environ: Mapping[str, str] = os.environ) -> bool:
    """Log to ``stream`` (stderr) at ``level``; journald gets priority prefixes. Returns whether
    the journal format is used."""
    stream = stream or sys.stderr
    journal = stderr_is_journal(environ, stream)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "edge_agent", False)]
    if root.handlers and not ours:  # configured by the embedding program (as basicConfig does)
        return journal
    for old in ours:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream)
    handler.edge_agent = True  # type: ignore[attr-defined]
    handler.setFormatter(JournalFormatter() if journal else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    return journal


def error_line(command: str, message: str, journal: bool) -> str:
    """The one line a failed command prints (with journald's error priority under systemd)."""
    return "%sedge-agent %s: error: %s" % ("<3>" if journal else "", command,
                                           " ".join(str(message).split()))


def stdout_gone() -> bool:
    """True when nobody reads our standard output any more (a pipe whose reader exited, as
    ``| head`` does): the write end of such a pipe polls as an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):  # no poll(), or stdout is not a real file
        return False


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    try:
        try:
            status = _main(argv)
        finally:  # --help's SystemExit too: a reader gone shows here, not in the flush at exit
            sys.stdout.flush()
        return status
    except KeyboardInterrupt as exc:
        # Ctrl-C (SIGTERM, SIGHUP: agent.__main__.console) before a command took over its
        # signals (importing the commands, parsing, a command's own start-up): one line and
        # the signal's status, as every interrupt ends
        return interrupted(argv, exc)
    except BrokenPipeError:
        if not stdout_gone():  # a pipe of the command's own (a child process): a real error
            raise
        # `edge-agent plan --json | head`: stop as a tool killed by SIGPIPE does, without a
        # traceback; stdout goes to /dev/null so that the flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:  # an interrupt caught on the way (here or by the command): exit with its status
        forget_caught_interrupt()


def _main(argv: Optional[List[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    journal = setup_logging(args.log_level)
    if not getattr(args, "_module", None):
        print(short_usage(), end="")
        return EXIT_USAGE
    # a command with actions names the action too (`edge-agent fleet render: error: ...`)
    command = " ".join(filter(None, (args.command, getattr(args, args.command + "_action", ""))))
    try:
        return int(args._module.run(args) or 0)
    except UsageError as exc:
        # a subclass may name its own status (a service's configuration fault: EXIT_CONFIG)
        print(error_line(command, str(exc), journal), file=sys.stderr)
        return int(getattr(exc, "exit_status", EXIT_USAGE))
    except ModuleNotFoundError as exc:
        hint = missing_module_hint(exc)
        if hint is None:
            raise
        print(error_line(command, hint, journal), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # SIGTERM where a command turns it into one: 143
        return interrupted(argv, exc)


def interrupted(argv: Optional[List[str]], exc: BaseException) -> int:
    """An interrupt no command reported: ``edge-agent COMMAND: interrupted (SIGINT)`` on
    stderr; the signal's exit status (130 for Ctrl-C)."""
    args = sys.argv[1:] if argv is None else argv
    return report_interrupt(exc, next((a for a in args if a in COMMANDS), ""))
