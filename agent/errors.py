"""The one exception type for user mistakes, shared by agent, engines and calibration.

Raise ``UsageError("what is wrong, and where")`` for bad input (config, scenario, bundle,
command-line values). The CLI prints it as a single line and exits with status 2; library
callers can catch it like any exception. Subclasses name the kind of input.

``EXIT_CONFIG`` is the status a long-running command (``run``, ``calibrate``) exits with when it
cannot start because of its configuration or its files: the systemd units list it in
``RestartPreventExitStatus`` so a fault that a restart cannot fix does not become a restart loop.
"""

EXIT_USAGE = 2  # a bad command line or input file in an interactive command
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: a service cannot start; the units do not restart on it


class UsageError(Exception):
    """A user mistake: printed as one clear line, exit status 2, no traceback."""
