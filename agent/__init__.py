"""Edge agent: collaborative early-exit inference across a fleet of Jetson devices."""

__version__ = "0.2.0"
