"""A terminal's signals to a long command, one way for every command: SIGTERM and SIGHUP (the
terminal or ssh session closed) end it as Ctrl-C does, so it keeps what finished and says so,
with the exit status of each (130, 143, 129). Their default actions ended a command at once:
no summary, files half-written, and a testbed's namespaces and agents left behind."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator, Optional


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is but ending with its own exit status (143)."""

    exit_status = 143


class HungUp(Terminated):
    """SIGHUP (the terminal or ssh session closed): handled as SIGTERM, exit status 129."""

    exit_status = 129


def raised_for(signum: int) -> type:
    """The exception a signal ends a command with (KeyboardInterrupt for SIGINT)."""
    return {signal.SIGTERM: Terminated, signal.SIGHUP: HungUp}.get(signum, KeyboardInterrupt)


def interrupt_behind(exc: BaseException) -> Optional[BaseException]:
    """The interrupt (a ``KeyboardInterrupt``) ``exc`` is or was raised from, else None.

    Python up to 3.11 turns any exception raised inside a ``__set_name__`` call into a
    RuntimeError caused by it; such calls run while a class is made (every dataclass field
    given with ``field()``), so a signal arriving then, while a module imports, surfaced as a
    RuntimeError: a traceback and status 1 instead of one line and the signal's status."""
    for _ in range(8):  # a cause chain of wrappers, never a cycle
        if exc is None or isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__cause__
    return None


def signal_name(exc: BaseException) -> str:
    """"SIGHUP", "SIGTERM" or "SIGINT": the signal an interrupt came from."""
    return "SIGHUP" if isinstance(exc, HungUp) else "SIGTERM" if isinstance(
        exc, Terminated) else "SIGINT"


def report_interrupt(exc: BaseException, command: str = "") -> int:
    """An interrupt no command reported: ``edge-agent COMMAND: interrupted (SIGTERM)`` on
    stderr (without a command name where none is known yet); the signal's exit status."""
    try:  # a closed terminal (SIGHUP) fails the print (EIO)
        print("\nedge-agent%s: interrupted (%s)" % (" " + command if command else "",
                                                   signal_name(exc)), file=sys.stderr)
    except OSError:
        pass
    return int(getattr(exc, "exit_status", 130))


@contextlib.contextmanager
def as_interrupts(signals=(signal.SIGTERM, signal.SIGHUP),
                  note: Optional[Callable[[int], None]] = None) -> Iterator[None]:
    """Within the block, ``signals`` raise ``raised_for`` them (``note`` called first with the
    signal number); the handlers before are put back after. A signal ignored when the block
    starts stays ignored (``nohup`` ignores SIGHUP so that a closed session does not stop the
    command). Off the main thread (no handler can be set there) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if note is not None:
            note(signum)
        raise raised_for(signum)

    previous = {s: signal.signal(s, handler) for s in signals
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)  # None: set in C


@contextlib.contextmanager
def deferred(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, ``signals`` wait (blocked); one that came arrives as the block ends.
    For imports of libraries that turn an interrupt raised inside their own import into
    another error: numpy's C API prints it and raises ``ImportError: numpy.core.multiarray
    failed to import``, a traceback and status 1 where one line and 130 were due. Off the main
    thread, or where signals cannot be blocked, the block runs as it is."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = block(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, before)  # a signal that waited is handled from here


def forget_caught_interrupt() -> None:
    """Keep a caught Ctrl-C from turning the exit into a death by SIGINT.

    CPython notes a KeyboardInterrupt that leaves code run from a string (``exec`` or
    ``eval``: namedtuple, dataclass and many modules build functions so, often while they are
    imported) as unhandled, even when a caller catches it later, and at exit then kills the
    process with SIGINT instead of exiting with the status given (-2, no status 130). Running
    code from a string resets that note, so a command that caught the interrupt calls this
    before it exits."""
    exec("")  # noqa: S102 - an empty string: nothing runs, the interpreter's note is reset
