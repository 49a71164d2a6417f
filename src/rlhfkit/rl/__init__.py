"""rlhfkit.rl."""
