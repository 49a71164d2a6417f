"""rlhfkit.loop."""
