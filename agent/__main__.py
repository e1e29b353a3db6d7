"""Allows ``python -m agent`` as an alias of the ``edge-agent`` console script."""

import sys

try:
    from agent.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line's modules load: as any interrupt
    try:
        sys.stderr.write("\nedge-agent: interrupted (SIGINT)\n")
    except OSError:  # a closed terminal
        pass
    exec("")  # as agent.commands.interrupts.forget_caught_interrupt: exit 130, not by SIGINT
    sys.exit(130)

sys.exit(main())
