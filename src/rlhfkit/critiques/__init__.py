"""Free-text critiques turned into reward: encoders (rules, judge, learned) and weighted rating records.

An encoder maps a critique of one (prompt, response) to a score in [-1, 1], a confidence in [0, 1]
and optional aspect labels; :mod:`rlhfkit.critiques.records` turns the encodings into rating records
whose weight is the confidence, so they mix into ``train-rm`` with the other kinds of feedback.
"""

from rlhfkit.critiques.base import CritiqueEncoder, CritiqueError, CritiqueItem, Encoded

__all__ = ["CritiqueEncoder", "CritiqueError", "CritiqueItem", "Encoded"]
