"""DIMEE (seed paper 004): early-exit based assignment of samples to mobile, edge or cloud."""
