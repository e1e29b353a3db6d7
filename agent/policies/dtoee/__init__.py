"""DTO-EE: distributed convex-optimisation offloading with exit-threshold tuning."""
