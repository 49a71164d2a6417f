"""Tiny, deterministic tokenizer and GPT-2 models for tests (built locally, no hub, milliseconds).

Import from any test: ``from helpers_models import tiny_tokenizer, tiny_gpt2, save_tiny_model``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<pad>"

CORPUS = [
    "The movie was great and the actors were wonderful.",
    "The food was bad and the service was slow.",
    "I loved the story. It was funny, warm and kind.",
    "This product is terrible; it broke after one day.",
    "What a lovely day! The sun is bright and the sky is blue.",
    "The answer is simple: add two and two to get four.",
    "Please explain why the sky is blue in one short sentence.",
    "Stop. That is enough for today.\nSee you tomorrow.",
]


@functools.lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    """Train a byte-level BPE on CORPUS once per vocab size and keep its JSON."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(with_pad: bool = True, vocab_size: int = 320, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer: eos=bos=<|endoftext|>, pad=<pad> unless ``with_pad`` is False."""
    tok = Tokenizer.from_str(_tokenizer_json(vocab_size))
    kwargs = {"eos_token": EOS, "bos_token": EOS}
    if with_pad:
        kwargs["pad_token"] = PAD
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side, **kwargs)
    return hf_tok


def tiny_gpt2(tokenizer: PreTrainedTokenizerFast, seed: int = 0, n_positions: int = 64, n_embd: int = 32,
              n_layer: int = 2, n_head: int = 2, eos_boost: float = 0.0,
              initializer_range: float = 0.02) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (float32, eval mode) sized for unit tests.

    ``eos_boost`` > 0 shifts the final layer-norm bias along the EOS embedding so that EOS becomes
    likely at every step: sampled sequences then end at different lengths (EOS/masking tests). A larger
    ``initializer_range`` gives peakier, more varied next-token distributions (greedy tests).
    """
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        initializer_range=initializer_range, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if eos_boost:
        with torch.no_grad():
            direction = model.transformer.wte.weight[tokenizer.eos_token_id]
            model.transformer.ln_f.bias.add_(eos_boost * direction / direction.norm().pow(2))
    return model.eval()


def save_tiny_model(directory: Path, with_pad: bool = True, seed: int = 0, **model_kwargs: object) -> Path:
    """Save a tiny GPT-2 and its tokenizer with save_pretrained into ``directory``; return it."""
    tokenizer = tiny_tokenizer(with_pad=with_pad)
    model = tiny_gpt2(tokenizer, seed=seed, **model_kwargs)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
