"""A deployed fleet: per-device configs and keys rendered from a topology, its status."""
