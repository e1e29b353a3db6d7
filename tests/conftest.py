"""Test-wide settings: one thread for every numeric library, so the suite behaves the same on a
loaded 2-core CI machine as on a workstation."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
