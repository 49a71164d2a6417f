"""A synthetic feedback world with a known utility, small enough for a tiny model to learn in seconds.

Responses are short sequences of words; utility = (# "good") - (# "bad"). Preferences follow
Bradley-Terry noise P(a ≻ b) = σ(β (u_a - u_b)); rankings follow Plackett-Luce with the same
utilities; ratings are the utility mapped to 1..5 plus noise; labels are Bernoulli(σ(β u)).
A one-word-per-token tokenizer keeps the task about the words, not about BPE.
"""

from __future__ import annotations

import math
import random

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

from rlhfkit.data.records import Comparison, Label, Ranking, Rating
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings

GOOD, BAD = "good", "bad"
NEUTRAL = [f"w{i}" for i in range(6)]
PROMPTS = [f"q{i}" for i in range(4)]
WORDS = ["<pad>", "<eos>", GOOD, BAD, *NEUTRAL, *PROMPTS, "answer:"]
LENGTH = 8


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer over the synthetic vocabulary (pad=0, eos=1)."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<pad>")


def tiny_reward_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, num_heads: int = 1,
                      n_embd: int = 32, n_layer: int = 2, max_length: int = 32) -> RewardModel:
    """A randomly initialised tiny GPT-2 trunk with a scalar head (dropout off)."""
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_length, n_embd=n_embd, n_layer=n_layer,
                        n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return RewardModel(GPT2Model(config), tokenizer,
                       RewardModelSettings(num_heads=num_heads, max_length=max_length, min_prompt_tokens=4))


def utility(text: str) -> int:
    """The known utility: count of 'good' minus count of 'bad'."""
    words = text.split()
    return words.count(GOOD) - words.count(BAD)


def response(rng: random.Random, length: int = LENGTH) -> str:
    """A random response: each word 'good' or 'bad' with probability 1/4, else neutral."""
    return " ".join(rng.choice([GOOD, BAD, rng.choice(NEUTRAL), rng.choice(NEUTRAL)]) for _ in range(length))


def prompt(rng: random.Random) -> str:
    """A random prompt (irrelevant to the utility)."""
    return f"{rng.choice(PROMPTS)} answer:"


def sigmoid(x: float) -> float:
    """Logistic function."""
    return 1.0 / (1.0 + math.exp(-x))


def comparisons(n: int, rng: random.Random, beta: float = 1.0) -> list[Comparison]:
    """n labelled pairs with Bradley-Terry noise of strength beta."""
    out = []
    while len(out) < n:
        a, b = response(rng), response(rng)
        if a == b:
            continue
        a_wins = rng.random() < sigmoid(beta * (utility(a) - utility(b)))
        out.append(Comparison(prompt(rng), a if a_wins else b, b if a_wins else a))
    return out


def unlabelled_pairs(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """n held-out (prompt, a, b) pairs for expected-accuracy evaluation."""
    return [(prompt(rng), response(rng), response(rng)) for _ in range(n)]


def bayes_accuracy(pairs: list[tuple[str, str, str]], beta: float = 1.0) -> float:
    """Expected accuracy of the best possible predictor (prefer the higher utility; a tie is a coin flip)."""
    return sum(max(p, 1 - p) for p in (sigmoid(beta * (utility(a) - utility(b))) for _, a, b in pairs)) / len(pairs)


def expected_accuracy(model: RewardModel, pairs: list[tuple[str, str, str]], beta: float = 1.0) -> float:
    """Expected accuracy of the model's choices against BT-sampled labels (no label noise in the estimate)."""
    prompts = [p for p, _, _ in pairs]
    ra = model.score_texts(prompts, [a for _, a, _ in pairs])
    rb = model.score_texts(prompts, [b for _, _, b in pairs])
    total = 0.0
    for (_, a, b), x, y in zip(pairs, ra.tolist(), rb.tolist()):
        p_a = sigmoid(beta * (utility(a) - utility(b)))
        total += p_a if x > y else (1 - p_a) if x < y else 0.5
    return total / len(pairs)


def rankings(n: int, rng: random.Random, k: int = 4, beta: float = 1.0) -> list[Ranking]:
    """n rankings of k responses sampled from Plackett-Luce (Gumbel-max trick)."""
    out = []
    while len(out) < n:
        texts = [response(rng) for _ in range(k)]
        if len(set(texts)) < k:
            continue
        keys = [beta * utility(t) - math.log(-math.log(rng.random())) for t in texts]
        order = sorted(range(k), key=lambda i: -keys[i])
        ranks = [0] * k
        for position, index in enumerate(order):
            ranks[index] = position + 1
        out.append(Ranking(prompt(rng), tuple(texts), tuple(ranks)))
    return out


def ratings(n: int, rng: random.Random, noise: float = 0.5) -> list[Rating]:
    """n ratings on a 1..5 scale: 3 + utility/2 + Gaussian noise, rounded and clipped."""
    out = []
    for _ in range(n):
        text = response(rng)
        value = min(5, max(1, round(3 + utility(text) / 2 + rng.gauss(0, noise))))
        out.append(Rating(prompt(rng), text, float(value), (1.0, 5.0)))
    return out


def labels(n: int, rng: random.Random, beta: float = 1.0) -> list[Label]:
    """n good/bad labels drawn with P(good) = σ(β u)."""
    out = []
    for _ in range(n):
        text = response(rng)
        out.append(Label(prompt(rng), text, rng.random() < sigmoid(beta * utility(text))))
    return out
