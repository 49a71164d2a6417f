"""rlhfkit: the whole RLHF loop."""
__version__ = "0.1.0"
