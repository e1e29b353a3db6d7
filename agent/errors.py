"""The one exception type for user mistakes, shared by agent, engines and calibration.

Raise ``UsageError("what is wrong, and where")`` for bad input (config, scenario, bundle,
command-line values). The CLI prints it as a single line and exits with status 2; library
callers can catch it like any exception. Subclasses name the kind of input.

``EXIT_CONFIG`` is the status ``run`` exits with when it cannot start because of its
configuration or its files (``calibrate``'s refusals are usage errors, status 2): the systemd units list it in
``RestartPreventExitStatus`` so a fault that a restart cannot fix does not become a restart loop.

``missing_module_hint`` names the install that brings an optional module a command or an
engine needs (the CLI's hint, and a worker's when its engine runtime is missing).
"""

from typing import Optional

EXIT_USAGE = 2  # a bad command line or input file in an interactive command
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: a service cannot start; the units do not restart on it


class UsageError(Exception):
    """A user mistake: printed as one clear line, exit status 2, no traceback."""


# an optional dependency a command or an engine needs -> the install that brings it
EXTRA_OF_MODULE = {
    "onnxruntime": "'edge-agent[cpu]' (or [gpu]; on a Jetson NVIDIA's onnxruntime wheel, see "
                   "docs/jetson.md)",
    "scipy": "'edge-agent[tools]'",
    "matplotlib": "'edge-agent[tools]'",
    "onnx": "'edge-agent[tools]'",
    "jtop": "'edge-agent[jetson]'",
}


def missing_module_hint(exc: ModuleNotFoundError) -> Optional[str]:
    """The install that provides a missing optional module, or None for any other module."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None
    return "this command needs %s, which is not installed: pip install %s" % (
        top, EXTRA_OF_MODULE[top])


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none): how a library's
    multi-line error is quoted inside a one-line refusal."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
