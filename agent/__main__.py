"""The ``edge-agent`` console script's entry point (``console``), and ``python -m agent``.

The command line's modules take a few tenths of a second to import before a command sets its
own signal handlers. ``console`` turns SIGTERM and SIGHUP into the interrupts SIGINT already
is (``agent.commands.interrupts``) before it imports them, so a signal in that window ends the
command as one later does: one line naming it, exit 143 or 129, no traceback; and it holds
signals back while numpy and the command line's modules import (``deferred``), since numpy
turns an interrupt inside its own import into an ImportError. Only this entry
point sets them, and only while it runs: importing ``agent`` or ``agent.cli`` from other code
leaves that program's handlers as they are.
"""

import sys


def console() -> int:
    """Run the command line of ``sys.argv``; returns the process exit status."""
    noted = []  # SIGTERM or SIGHUP before agent.commands.interrupts is imported

    def note(signum, _frame):
        noted.append(signum)

    previous = {}
    status = None
    try:
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
    return status


if __name__ == "__main__":
    sys.exit(console())
