"""Sensitivity: pruning groups and per-layer sensitivity sweeps."""
