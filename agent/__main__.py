"""Allows ``python -m agent`` as an alias of the ``edge-agent`` console script."""

import sys

from agent.cli import main

sys.exit(main())
