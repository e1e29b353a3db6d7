"""Scenario files (the input of plan and simulate) and the papers' settings."""
