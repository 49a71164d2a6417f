"""Tests of reward models (rlhfkit.reward, rlhfkit.models.reward_model)."""
