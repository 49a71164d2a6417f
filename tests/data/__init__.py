"""Tests of feedback records and readers (rlhfkit.data)."""
