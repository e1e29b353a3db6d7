"""Capacity side: measure each stage engine's capacity mu (FLOP/s) per power mode, keep the
measurements in a versioned calibration profile, and re-estimate mu online while serving.

Modules:

* ``host``         -- identity of this device (board model, L4T release, CPU-path mode name)
* ``jtop_adapter`` -- thin adapter over jetson-stats' ``jtop`` client (modes, readings)
* ``modes``        -- power-mode switching with wait-and-verify, and restoring the original mode
* ``measure``      -- timing one stage engine for a fixed time, with power/clock/temperature samples
* ``profile``      -- the profile file (versioned JSON, atomic, locked), ``lookup_capacity``
* ``online``       -- ``OnlineCapacityEstimator`` (smoothed mu from service times, drift check)
* ``runner``       -- the calibration run behind ``edge-agent calibrate``
"""
