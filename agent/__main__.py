"""The ``edge-agent`` console script's entry point (``console``), and ``python -m agent``.

The command line's modules take a few tenths of a second to import before a command sets its
own signal handlers. ``console`` turns SIGTERM and SIGHUP into the interrupts SIGINT already
is (``agent.commands.interrupts``) before it imports them, so a signal in that window ends the
command as one later does: one line naming it, exit 143 or 129, no traceback; and it holds
signals back while numpy and the command line's modules import (``deferred``), since numpy
turns an interrupt inside its own import into an ImportError. Only this entry
point sets them, and only while it runs: importing ``agent`` or ``agent.cli`` from other code
leaves that program's handlers as they are.

An interrupt can also come while the main thread runs a callback Python cannot raise from: a
weakref callback (importlib runs one each time a module finishes importing) or a ``__del__``.
Python then prints "Exception ignored in ..." with a traceback and goes on as if no signal had
come, so a Ctrl-C in the first tenths of a second once let a testbed run to its end.
``console`` sends such an interrupt again (``resend_lost_interrupts``) while it runs, from its
first statement on: even importing ``signal`` runs that callback. Before it, while the
interpreter imports ``agent`` and this module, such an interrupt is still Python's to report
("Exception ignored in: <function _get_module_lock.<locals>.cb ...>") and the command goes on.
"""

import _thread
import sys
import time


def resend_lost_interrupts(previous, delay_s: float = 0.01):
    """A ``sys.unraisablehook`` that prints nothing for an interrupt Python could not raise (a
    KeyboardInterrupt, agent.commands.interrupts' Terminated or HungUp, or a start-up's
    StoppedStarting, leaving a callback) and sends its signal again ``delay_s`` later from a
    short-lived thread, by when the callback has returned; any other exception goes to
    ``previous``. The signal: what the interrupt's ``lost()`` returns where it has one
    (``agent.ops.startstop``: it also makes the stop due again), else its exit status less 128
    (130: SIGINT, 143: SIGTERM, 129: SIGHUP). It goes to the thread that lost it (signal
    handlers run in the main thread alone): sent to the process, a thread that does not block
    it would take it while the main thread holds signals back (``deferred``), and the
    interrupt would come inside the import that holds them. Once this hook is replaced again
    (``console`` puts the one before back as the command ends), nothing more is sent."""
    def hook(unraisable) -> None:
        kind, exc = unraisable.exc_type, unraisable.exc_value
        if not (isinstance(kind, type) and issubclass(kind, KeyboardInterrupt)):
            previous(unraisable)
            return
        import signal  # at once where console's own import of it was what the signal cut short

        lost = getattr(exc, "lost", None)
        signum = lost() if callable(lost) else int(getattr(kind, "exit_status", 130)) - 128
        if not 0 < signum < signal.NSIG:  # no signal behind it: say it as Python would
            previous(unraisable)
            return
        lost_in = _thread.get_ident()

        def resend() -> None:
            time.sleep(delay_s)
            if sys.unraisablehook is not hook:  # console has ended: the command said how
                return
            try:
                signal.pthread_kill(lost_in, signum)
            except OSError:  # that thread has ended (the main thread: the process with it)
                pass

        try:
            _thread.start_new_thread(resend, ())
        except RuntimeError:  # the interpreter is shutting down: say it as Python would
            previous(unraisable)
    return hook


def console() -> int:
    """Run the command line of ``sys.argv``; returns the process exit status."""
    noted = []  # SIGTERM or SIGHUP before agent.commands.interrupts is imported

    def note(signum, _frame):
        noted.append(signum)

    previous = {}
    status = None
    unraisable = sys.unraisablehook
    try:
        sys.unraisablehook = resend_lost_interrupts(unraisable)  # first: see the docstring
        import signal  # here: a Ctrl-C while even this loads ends as any other

        # SIGHUP never ends an agent (agent.ops.hangup): here, before it has read its config
        # or keys, there is nothing to reload yet, so `run` ignores it until its own handler
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        ending = (signal.SIGTERM,) if command == "run" else (signal.SIGTERM, signal.SIGHUP)
        # first: importing the handlers' package takes milliseconds (argparse, typing) that
        # SIGTERM's default action would end silently; until then a signal is noted
        for s in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(s) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                previous[s] = signal.signal(s, note if s in ending else signal.SIG_IGN)
        from agent.commands.interrupts import as_interrupts, deferred, raised_for

        with as_interrupts(ending):  # a command's own handlers replace these and put them back
            if noted:
                raise raised_for(noted[0])
            with deferred():
                # numpy first, which nearly every command loads: an interrupt raised inside
                # its import (its C API's) came out as an ImportError with a traceback
                try:
                    import numpy  # noqa: F401
                except ImportError:  # `install` on a device without it yet: a command that
                    pass  # needs it says so as before, when it imports it
                from agent.cli import main

            status = main()
    except (KeyboardInterrupt, RuntimeError) as exc:  # before main took over (Ctrl-C: from
        # the first moment); a RuntimeError may stand for one (``interrupt_behind``). Imported
        # again where the interrupt cut this import short (a module that failed is not kept)
        from agent.commands.interrupts import (forget_caught_interrupt, interrupt_behind,
                                               report_interrupt)

        interrupt = interrupt_behind(exc)
        if interrupt is None:
            raise
        if status is None:  # else a signal after the command had ended and said how
            status = report_interrupt(interrupt)
        forget_caught_interrupt()  # exit with the status, not by SIGINT (see there)
    finally:  # the command has ended: a signal from now on acts as it did before (a hung exit)
        for s, old in previous.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)
        sys.unraisablehook = unraisable
    return status


if __name__ == "__main__":
    sys.exit(console())
