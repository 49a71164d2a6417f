"""The learned encoder: bag of words and bigrams, Bayesian ridge regression onto ratings in [-1, 1].

Fitted on the critiques of a campaign that came with a rating. Bigrams keep "no reason" apart from
"good reason". Confidence = (share of the critique's words the model knows) x (rating noise variance /
predictive variance) = known / (1 + leverage): an inverse-variance weight, so a critique in unseen
words, or far from the training critiques, weighs little, while one like many rated critiques weighs
nearly 1 however noisy the ratings are (the encoder's overall skill is the fit report's held-out line).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rlhfkit.critiques.base import CritiqueError, CritiqueItem, Encoded

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
MIN_ITEMS = 10


def tokens(text: str) -> list[str]:
    """Lower-cased words of a critique."""
    return WORD.findall(text.lower())


def features(text: str) -> set[str]:
    """Words and adjacent word pairs of a critique."""
    words = tokens(text)
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


def confidence(known: float, leverage: float) -> float:
    """Weight of one prediction: known-word share x noise variance / predictive variance, i.e. known / (1 + leverage).

    ``leverage`` is x A⁻¹ xᵀ, the prediction's parameter variance in units of the rating noise variance.
    """
    if not 0.0 <= known <= 1.0 or not leverage >= 0.0:
        raise CritiqueError(f"confidence: known share must be in [0, 1] and leverage >= 0, got {known}, {leverage}")
    return known / (1.0 + leverage)


@dataclass(frozen=True)
class FitReport:
    """How well the encoder predicts held-out ratings, beside predicting their mean."""

    n_train: int
    n_heldout: int
    features: int
    heldout_pearson: float
    heldout_rmse: float
    constant_rmse: float

    def line(self) -> str:
        """One console line."""
        return (f"learned critique encoder: {self.n_train} rated critiques, {self.features} features; held-out "
                f"({self.n_heldout}): Pearson r {self.heldout_pearson:.3f}, RMSE {self.heldout_rmse:.3f} "
                f"(predicting the mean: {self.constant_rmse:.3f})"
                + ("; no better than the mean on held-out critiques" if self.no_skill else ""))

    @property
    def no_skill(self) -> bool:
        """Held-out ratings were predicted no better than by their mean (False when none were held out)."""
        return self.n_heldout > 0 and not (self.heldout_rmse < self.constant_rmse and self.heldout_pearson > 0)


class LearnedEncoder:
    """Ridge weights over a vocabulary with the posterior covariance that gives each prediction a confidence."""

    def __init__(self, vocab: Sequence[str], weights: np.ndarray, bias: float, a_inv: np.ndarray,
                 noise_var: float, target_var: float, name: str = "learned") -> None:
        self.vocab = list(vocab)
        self.index = {f: i for i, f in enumerate(self.vocab)}
        self.weights, self.bias, self.a_inv = weights, float(bias), a_inv
        self.noise_var, self.target_var = float(noise_var), float(target_var)
        self.name = name

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """Binary feature matrix (n, vocabulary) of ``texts``."""
        x = np.zeros((len(texts), len(self.vocab)))
        for row, text in enumerate(texts):
            for f in features(text):
                if f in self.index:
                    x[row, self.index[f]] = 1.0
        return x

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Unclipped predicted ratings in the [-1, 1] units of the training targets."""
        return self.matrix(texts) @ self.weights + self.bias

    def encode(self, critiques: Sequence[str], prompts: Sequence[str] = (),
               responses: Sequence[str] = ()) -> list[Encoded]:
        """Score (clipped to [-1, 1]) and confidence of each critique."""
        x = self.matrix(critiques)
        scores = x @ self.weights + self.bias
        x1 = np.hstack([x, np.ones((len(x), 1))])
        leverages = np.einsum("ij,jk,ik->i", x1, self.a_inv, x1)
        out = []
        for text, score, lev in zip(critiques, scores, leverages):
            words = tokens(text)
            known = sum(w in self.index for w in words) / len(words) if words else 0.0
            out.append(Encoded(float(np.clip(score, -1.0, 1.0)), confidence(known, float(lev))))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the encoder to one ``.npz`` file."""
        path = Path(path)
        np.savez(path, vocab=np.array(self.vocab, dtype=str), weights=self.weights, a_inv=self.a_inv,
                 scalars=np.array([self.bias, self.noise_var, self.target_var]))
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> LearnedEncoder:
        """Read an encoder written by :meth:`save`."""
        try:
            with np.load(Path(path)) as data:
                bias, noise_var, target_var = data["scalars"].tolist()
                return cls(data["vocab"].tolist(), data["weights"], bias, data["a_inv"], noise_var, target_var,
                           name=f"learned:{Path(path).name}")
        except (OSError, KeyError, ValueError) as exc:
            raise CritiqueError(f"learned critique encoder {path}: cannot read ({exc})") from exc


def fit_ridge(texts: Sequence[str], targets: Sequence[float], alpha: float = 1.0, min_count: int = 2,
              max_features: int = 2000) -> LearnedEncoder:
    """Fit on (critique, target in [-1, 1]); features seen in fewer than ``min_count`` critiques are dropped."""
    counts = Counter(f for t in texts for f in features(t))
    vocab = sorted((f for f, c in counts.items() if c >= min_count), key=lambda f: (-counts[f], f))[:max_features]
    y = np.asarray(targets, dtype=float)
    empty = np.zeros((len(vocab) + 1, len(vocab) + 1))
    x = LearnedEncoder(vocab, np.zeros(len(vocab)), 0.0, empty, 1.0, 1.0).matrix(texts)
    x1 = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(len(vocab) + 1, float(alpha))
    penalty[-1] = 1e-6  # the intercept is (almost) not shrunk
    a_inv = np.linalg.inv(x1.T @ x1 + np.diag(penalty))
    solution = a_inv @ x1.T @ y
    residual = y - x1 @ solution
    dof = max(1.0, len(y) - float(np.trace(x1 @ a_inv @ x1.T)))
    return LearnedEncoder(vocab, solution[:-1], float(solution[-1]), a_inv, float(residual @ residual) / dof,
                          float(y.var()))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def fit_learned(items: Sequence[CritiqueItem], heldout: float = 0.2, seed: int = 0,
                alpha: float = 1.0) -> tuple[LearnedEncoder, FitReport]:
    """Fit on the rated critiques of ``items``; report held-out fit, then refit on all of them."""
    rated = [i for i in items if i.target is not None]
    if len(rated) < MIN_ITEMS:
        raise CritiqueError(f"learned critique encoder: needs at least {MIN_ITEMS} critiques that came with a "
                            f"rating, got {len(rated)} of {len(items)}")
    texts = [i.critique for i in rated]
    y = np.array([i.target for i in rated], dtype=float)
    order = np.random.default_rng(seed).permutation(len(rated))
    n_held = max(1, int(round(heldout * len(rated)))) if heldout > 0 else 0
    held, train = order[:n_held], order[n_held:]
    report_model = fit_ridge([texts[i] for i in train], y[train], alpha) if n_held else None
    if report_model is not None:
        predicted = np.clip(report_model.predict([texts[i] for i in held]), -1.0, 1.0)
        rmse = math.sqrt(float(np.mean((predicted - y[held]) ** 2)))
        constant = math.sqrt(float(np.mean((y[train].mean() - y[held]) ** 2)))
        pearson = _pearson(predicted, y[held])
    else:
        rmse = constant = pearson = float("nan")
    model = fit_ridge(texts, y, alpha)
    return model, FitReport(len(train), n_held, len(model.vocab), pearson, rmse, constant)


def report_json(report: FitReport) -> str:
    """The fit report as a JSON object (NaN written as null)."""
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                       for k, v in asdict(report).items()})
