"""rlhfkit.sft."""
