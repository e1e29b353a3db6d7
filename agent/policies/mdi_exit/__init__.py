"""MDI-Exit: queue-based offloading with admission and threshold control."""
