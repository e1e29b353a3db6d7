"""Subcommands of ``edge-agent``; see ``agent.cli`` for the module contract."""
