"""rlhfkit.feedback."""
