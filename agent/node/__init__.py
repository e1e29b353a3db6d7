"""One agent: the composition root, the event loop, the source and worker sides, capacity, status."""
