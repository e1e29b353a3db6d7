"""``python -m tests.integration.toy_agent run --config FILE``: the agent CLI with the toy
``round-robin`` policy registered first, as a plug-in's launcher would do it."""

import sys

from agent.cli import main
from tests.integration.toy_policy import register

if __name__ == "__main__":
    register()
    sys.exit(main(sys.argv[1:]))
