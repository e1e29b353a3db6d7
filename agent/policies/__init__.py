"""Pure policy math: routing and exit-threshold decisions.

Modules here import numpy, scipy and the standard library's pure parts only: no sockets,
threads, engines or hardware (``tests/unit/test_policy_purity.py`` enforces it). The agent, the
simulator and ``plan`` all call this code; each equation has exactly one implementation.
"""
