"""The one exception type for user mistakes, shared by agent, engines and calibration.

Raise ``UsageError("what is wrong, and where")`` for bad input (config, scenario, bundle,
command-line values). The CLI prints it as a single line and exits with status 2; library
callers can catch it like any exception. Subclasses name the kind of input.
"""


class UsageError(Exception):
    """A user mistake: printed as one clear line, exit status 2, no traceback."""
