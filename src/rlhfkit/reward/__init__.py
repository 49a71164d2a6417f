"""Reward models from human feedback: losses (pure torch), batching, trainer, evaluation, exploit probes.

Modules: ``losses`` (Bradley-Terry, Plackett-Luce, rating regression/ordinal, BCE, mixture),
``batching`` and ``objective`` (one forward pass per micro-batch), ``trainer`` (accumulation,
exact resume), ``pipeline`` (``rlhfkit train-rm``), ``evaluation`` and ``probes``.
The model class lives in :mod:`rlhfkit.models.reward_model`.
"""
