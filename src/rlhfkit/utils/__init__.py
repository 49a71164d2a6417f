"""Shared runtime helpers: threads and seeds, atomic checkpoints, metric tracking, progress."""
