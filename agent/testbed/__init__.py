"""The testbed: local agents on loopback or a field fleet, topologies, load, reports."""
