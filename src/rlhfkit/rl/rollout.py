"""Rollouts: prompts in; token ids, masks and the sampling log-probs of every response token out.

Trainers call a :class:`Sampler` and never ``model.generate``. Two backends:

- :class:`HFGenerateSampler` wraps ``transformers`` ``generate`` (the reference implementation);
- :class:`CachedSampler` runs its own decode loop over ``model.forward`` with a KV cache (dynamic,
  or static for fixed shapes), with little Python per token and no per-step logits kept.

Both return the same :class:`Rollout`. Log-probs are those of the sampled tokens under
``softmax(logits / T)`` of the raw logits (not the top-k/top-p-filtered distribution), so that
``rlhfkit.rl.logprobs.token_logprobs`` on the rollout reproduces them (the PPO ratio starts at 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

import torch
from torch import nn

from rlhfkit.models.chat import DEFAULT_CHAT_TEMPLATE, prompt_ids, turn_end_ids
from rlhfkit.models.gelu import fused_gelu_while
from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.models.recurrent import refuse_recurrent
from rlhfkit.models.signature import cache_argument, forward_parameters
from rlhfkit.rl.cached_llama import fused_projections_while
from rlhfkit.rl.packed_linear import packed_linears_while, packing_applies
from rlhfkit.rl.row_seeds import row_uniforms
from rlhfkit.rl.sampling import SamplingConfig
from rlhfkit.rl.token_draw import CDF_BLOCK, inverse_cdf_draw, sampled_pick, sampling_probs
from rlhfkit.utils.runtime import intra_op_threads_restored
from rlhfkit.utils.torchscript import scripted


class PromptTooLongError(ValueError):
    """A prompt plus ``max_new_tokens`` does not fit in the model's context."""


SamplingParams = SamplingConfig  # the one sampling config, under the name the samplers always used


@dataclasses.dataclass
class Rollout:
    """One batch of sampled responses. b = batch, P = prompt length, R = response length.

    prompt_ids (b, P) left-padded; prompt_mask (b, P); response_ids (b, R) right-padded with the pad
    id; response_mask (b, R) 1 up to and including the EOS/stop token; logprobs (b, R) float32 of
    the sampled tokens under softmax(logits / temperature), 0 where masked; finished (b,) bool =
    emitted EOS or a stop string; prompts; responses (decoded, cut before the stop string).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor
    prompts: list[str]
    responses: list[str]

    @property
    def sequences(self) -> torch.Tensor:
        """(b, P + R) prompt then response ids, the input of ``token_logprobs``."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(b, P + R) mask over ``sequences``."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_start(self) -> int:
        """Index of the first response token in ``sequences`` (= P)."""
        return self.prompt_ids.shape[1]

    @property
    def response_lengths(self) -> torch.Tensor:
        """(b,) number of response tokens, EOS/stop token included."""
        return self.response_mask.sum(-1)

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor on ``device``."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


class Sampler(Protocol):
    """Anything that turns prompts into a :class:`Rollout`; trainers depend on this only."""

    def sample(self, model: nn.Module, tokenizer: Any, prompts: list[str], params: SamplingParams,
               generator: torch.Generator | None = None) -> Rollout:
        """Sample one response per prompt (repeat prompts for several).

        Samplers that can seed each row (:class:`CachedSampler`) also take keyword-only ``row_seeds``.
        """
        ...


# ---------------------------------------------------------------------------------------------
# pieces shared by both backends


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """All end-of-sequence ids: the tokenizer's and those in the model's generation config."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    ids.update(turn_end_ids(tokenizer))  # the chat template's end of turn (Gemma's <end_of_turn>)
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(int(i) for i in extra)
    return sorted(ids)


def _context_length(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def encode_prompts(tokenizer: Any, prompts: Sequence[str], device: torch.device,
                   max_new_tokens: int, context_length: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize and left-pad prompts -> ids (b, P) and mask (b, P); too-long or empty prompts raise.

    A :class:`~rlhfkit.models.chat.Conversation` goes through the chat template with the generation
    prompt (SFT's default template when the tokenizer has none), so the policy sees what SFT trained on.
    """
    if not prompts:
        raise ValueError("no prompts to sample from")
    encoded = prompt_ids(tokenizer, list(prompts), fallback_template=DEFAULT_CHAT_TEMPLATE)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("tokenizer has no pad token; load it with rlhfkit.models.loading.load_tokenizer")
    for index, ids in enumerate(encoded):
        if not ids:
            if tokenizer.bos_token_id is None:
                raise ValueError(f"prompt {index} is empty and the tokenizer has no BOS token to start from")
            encoded[index] = ids = [tokenizer.bos_token_id]
        if context_length is not None and len(ids) + max_new_tokens > context_length:
            raise PromptTooLongError(
                f"prompt {index} has {len(ids)} tokens; with max_new_tokens={max_new_tokens} it exceeds the "
                f"model context of {context_length} tokens (shorten it or lower max_new_tokens)")
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids.to(device), mask.to(device)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Sample without dropout, then restore the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def decode_attention(current: str | None, device: torch.device, compiled: bool) -> str | None:
    """The attention to sample with by default: ``eager`` instead of SDPA for eager CPU decoding, else unchanged.

    PyTorch's fused CPU SDPA is slower for one query token: 0.33 vs 0.28 ms per layer in float32 and
    2.2 vs 0.35 ms in bfloat16 on ``bench/rollout.py``'s decode shapes (64 rows, 4 heads, 64 cached keys).
    """
    return "eager" if current == "sdpa" and device.type == "cpu" and not compiled else None


@contextlib.contextmanager
def attention_implementation(model: nn.Module, implementation: str | None) -> Iterator[None]:
    """Run with the model's attention set to ``implementation`` (None = unchanged), restoring it afterwards."""
    current = getattr(model.config, "_attn_implementation", None)
    if implementation is None or current == implementation or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(current)


class _DropFalsePaddingWarning(logging.Filter):
    """Drops transformers' "passing in an `attention_mask`" warning: ``generate`` itself discards an
    all-ones mask (prompts of equal length), then warns when finished rows feed the pad token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "strongly recommend passing in an `attention_mask`" not in record.getMessage()


@contextlib.contextmanager
def _quiet_padding_warning() -> Iterator[None]:
    """While ``generate`` runs, hide that false warning (every other transformers message passes)."""
    source = logging.getLogger("transformers.modeling_utils")
    quiet = _DropFalsePaddingWarning()
    source.addFilter(quiet)
    try:
        yield
    finally:
        source.removeFilter(quiet)


class StopStringChecker:
    """Finds the first response token at which the decoded text contains a stop string."""

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str], min_new_tokens: int = 0) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.min_new_tokens = min_new_tokens
        # A stop string of n characters lies within the last n + 4 tokens (a token is >= 1 character,
        # the margin covers byte-level tokens that end inside a multi-byte character).
        self.window = max((len(s) for s in self.stop_strings), default=0) + 4

    def contains_stop(self, text: str) -> bool:
        """Whether ``text`` contains any stop string."""
        return any(stop in text for stop in self.stop_strings)

    def cut(self, text: str) -> str:
        """``text`` up to (not including) its earliest stop string."""
        positions = [text.find(stop) for stop in self.stop_strings]
        found = [p for p in positions if p >= 0]
        return text[: min(found)] if found else text

    def step(self, responses: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """(b, t) responses so far, (b,) active rows -> (b,) bool: the newest token completes a stop string."""
        hits = torch.zeros_like(active)
        length = responses.shape[1]
        if not self.stop_strings or length < max(self.min_new_tokens, 1):
            return hits
        rows = active.nonzero().flatten().tolist()
        if not rows:
            return hits
        tails = responses[rows, max(0, length - self.window):].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        for row, text in zip(rows, texts):
            if self.contains_stop(text):
                hits[row] = True
        return hits

    def first_stop(self, tokens: list[int]) -> int | None:
        """Index of the token whose decoding first contains a stop string (binary search), or None."""
        decode = self.tokenizer.decode
        if not self.stop_strings or not self.contains_stop(decode(tokens, skip_special_tokens=True)):
            return None
        low, high = max(self.min_new_tokens, 1), len(tokens)
        if low > high:
            return None
        while low < high:
            mid = (low + high) // 2
            if self.contains_stop(decode(tokens[:mid], skip_special_tokens=True)):
                high = mid
            else:
                low = mid + 1
        return low - 1


def finalize_rollout(tokenizer: Any, prompts: Sequence[str], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                     response_ids: torch.Tensor, logprobs: torch.Tensor, eos_ids: Sequence[int],
                     params: SamplingParams) -> Rollout:
    """Mask everything after the first EOS or stop string, pad it, and decode the texts.

    ``response_ids``/``logprobs`` are (b, R) as sampled (tokens after the end are ignored).
    """
    batch, length = response_ids.shape
    device = response_ids.device
    is_eos = torch.isin(response_ids, torch.tensor(list(eos_ids), device=device))
    positions = torch.arange(length, device=device).expand(batch, length)
    end = torch.where(is_eos, positions, torch.full_like(positions, length)).min(dim=1).values
    checker = StopStringChecker(tokenizer, params.stop_strings, params.min_new_tokens)
    if params.stop_strings:
        rows = response_ids.tolist()
        stops = [checker.first_stop(tokens[: int(e)]) for tokens, e in zip(rows, end.tolist())]
        stop_end = torch.tensor([length if s is None else s for s in stops], device=device)
        end = torch.minimum(end, stop_end)
    finished = end < length
    response_mask = (positions <= end.unsqueeze(1)).long()
    pad_id = tokenizer.pad_token_id
    response_ids = response_ids.masked_fill(response_mask == 0, pad_id)
    logprobs = logprobs.float().masked_fill(response_mask == 0, 0.0)
    kept = [ids[: int(n)] for ids, n in zip(response_ids.tolist(), response_mask.sum(-1).tolist())]
    texts = tokenizer.batch_decode(kept, skip_special_tokens=True)
    responses = [checker.cut(text) for text in texts]
    return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids,
                   response_mask=response_mask, logprobs=logprobs, finished=finished,
                   prompts=list(prompts), responses=responses)


def check_row_seeds(row_seeds: torch.Tensor | None, rows: int) -> None:
    """A clear error unless ``row_seeds`` is None or one seed per prompt, shape (rows,)."""
    if row_seeds is not None and row_seeds.shape != (rows,):
        raise ValueError(f"row_seeds has shape {tuple(row_seeds.shape)}; expected one seed per prompt ({rows},)")



def step_uniforms(rows: int, device: torch.device, generator: torch.Generator | None = None, *,
                  row_seeds: torch.Tensor | None = None, counter: int = 0) -> torch.Tensor:
    """(rows, 1) float64 uniforms of one sampling step: ``row_seeds``' counter-based draws when given, else
    ``generator``'s (the global RNG when None)."""
    if row_seeds is not None:
        return row_uniforms(row_seeds.to(device), counter).unsqueeze(1)
    where = generator.device if generator is not None else device
    return torch.rand((rows, 1), generator=generator, device=where, dtype=torch.float64).to(device)


def sample_from_probs(probs: torch.Tensor, generator: torch.Generator | None = None, *,
                      row_seeds: torch.Tensor | None = None, counter: int = 0,
                      uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one index per row of (b, V) probabilities by inverse-CDF sampling -> (b,).

    Same distribution as ``torch.multinomial(probs, 1)`` but one uniform per row: on CPU,
    multinomial over a 4096-token vocabulary took 24 ms for 64 rows, this takes 0.2 ms
    (:func:`rlhfkit.rl.token_draw.inverse_cdf_draw`: a two-level CDF in float64). With ``row_seeds`` (b,) int64 the uniforms are
    :func:`rlhfkit.rl.row_seeds.row_uniforms` of (row seed, ``counter``) instead of ``generator``
    draws, so a row's token does not depend on the other rows of the batch. ``uniform`` (b, 1): draws made
    beforehand (:func:`step_uniforms`), which then replace both.
    """
    if uniform is None:
        uniform = step_uniforms(probs.shape[0], probs.device, generator, row_seeds=row_seeds, counter=counter)
    return inverse_cdf_draw(probs, uniform, CDF_BLOCK)


@contextlib.contextmanager
def _seeded_from(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Draw a seed from ``generator`` and use it for the global RNG inside, restoring it afterwards."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------
# backend 1: transformers generate


def _stop_string_criteria(checker: StopStringChecker, prompt_length: int) -> Any:
    """A transformers ``StoppingCriteria`` that ends rows whose response text gained a stop string."""
    from transformers import StoppingCriteria

    class StopStrings(StoppingCriteria):
        def __init__(self) -> None:
            self.done: torch.Tensor | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            if self.done is None:
                self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            self.done = self.done | checker.step(input_ids[:, prompt_length:], ~self.done)
            return self.done.clone()

    return StopStrings()


@dataclasses.dataclass
class HFGenerateSampler:
    """Sampling through ``model.generate`` (KV cache, left padding); log-probs from its raw logits."""

    name: str = "hf"

    def sample(self, model: nn.Module, tokenizer: Any, prompts: list[str], params: SamplingParams,
               generator: torch.Generator | None = None, *, row_seeds: torch.Tensor | None = None) -> Rollout:
        """Sample one response per prompt with ``generate``; see :class:`Rollout` for the shapes."""
        from transformers import GenerationConfig, StoppingCriteriaList

        if row_seeds is not None:
            raise ValueError(PER_ROW_UNSUPPORTED)

        device = model_device(model)
        prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, device, params.max_new_tokens, _context_length(model))
        eos_ids = eos_token_ids(model, tokenizer)
        sampling = {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p} if params.do_sample else {}
        config = GenerationConfig(
            do_sample=params.do_sample, max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
            eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            output_logits=True, return_dict_in_generate=True, use_cache=True, num_beams=1,
            repetition_penalty=1.0, no_repeat_ngram_size=0, **sampling,
        )
        criteria = StoppingCriteriaList()
        if params.stop_strings:
            checker = StopStringChecker(tokenizer, params.stop_strings, params.min_new_tokens)
            criteria.append(_stop_string_criteria(checker, prompt_ids.shape[1]))
        with torch.no_grad(), _eval_mode(model), _seeded_from(generator, device), _quiet_padding_warning():
            output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config,
                                    stopping_criteria=criteria)
        response_ids = output.sequences[:, prompt_ids.shape[1]:]
        logprobs = torch.stack([
            torch.log_softmax(step.float() / params.temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            for step, tokens in zip(output.logits, response_ids.unbind(1))
        ], dim=1)
        return finalize_rollout(tokenizer, prompts, prompt_ids, prompt_mask, response_ids, logprobs, eos_ids, params)


# ---------------------------------------------------------------------------------------------
# backend 2: our own decode loop


@dataclasses.dataclass
class CachedSampler:
    """Our decode loop: one prefill, then one ``forward`` per token over a KV cache.

    Per step: forward on the newest token, log-softmax of the last logits, filter, sample, and a
    gather of the sampled token's log-prob; only (b, V) of logits is alive at a time.
    ``cache="static"`` preallocates the cache (fixed shapes, friendlier to CUDA graphs and
    torch.compile). With the dynamic cache, ``compact`` drops finished rows from the batch (and
    the cache) once at most ``compact_ratio`` of the rows are still running, so long tails cost
    only the rows that are still generating. Greedy decoding gives the same tokens as
    :class:`HFGenerateSampler` (verified in the tests, compaction included). ``attention``: the
    attention implementation while sampling (``None``: ``eager`` for an SDPA model on CPU, see
    :func:`decode_attention`; otherwise the model's own). With the dynamic cache and a model of plain
    full-attention layers, ``inplace_kv`` preallocates the cache and writes it in place
    (:mod:`rlhfkit.rl.cached_kv`) and ``group_prefill`` runs the prompts grouped by length instead of
    left-padded to the longest (:mod:`rlhfkit.rl.cached_prefill`). ``fuse_gelu`` samples with the
    one-kernel tanh GELU (:func:`rlhfkit.models.gelu.fused_gelu_while`, the model is restored afterwards).
    ``gpt2_step`` decodes a plain GPT-2 over the in-place cache with a hand-written step
    (:mod:`rlhfkit.rl.cached_gpt2`: the same modules without transformers' per-call wrapping), ``llama_step`` a
    Llama, Qwen2, Qwen3 or Mistral model likewise (:mod:`rlhfkit.rl.cached_llama`).
    ``pack_weights``: on CPU in float32, the model's plain linear layers run on weights packed once per
    rollout for oneDNN (:func:`rlhfkit.rl.packed_linear.packed_linears_while`; prefill and decode).
    ``serial_step_work``: on CPU, once the rows still decoding times the model's parameter count is at most
    this, the remaining steps run on one intra-op thread (see :func:`serial_decode_rows`; 0: never).
    ``shard_rows``: on CPU with several intra-op threads, a GPT-2 or Llama-family batch whose per-thread share of rows is in
    that one-thread regime is decoded as one shard of rows per thread (:mod:`rlhfkit.rl.sharded_decode`) while
    rows x parameters is above ``shard_merge_work``; the shards' caches are allocated by the calling thread, so
    the rollout leaves no buffers in the heap of the pool thread that steps them.
    ``scripted_step``: the GPT-2 or Llama-family decode step on packed weights runs as one TorchScript function,
    which holds no GIL while the shards' threads step (:mod:`rlhfkit.rl.scripted_gpt2`,
    :mod:`rlhfkit.rl.scripted_llama`; the same logits as the eager step).
    """

    cache: Literal["dynamic", "static"] = "dynamic"
    compact: bool = True
    compact_ratio: float = 0.75
    attention: str | None = None
    name: str = "cached"
    inplace_kv: bool = True
    group_prefill: bool = True
    fuse_gelu: bool = True
    gpt2_step: bool = True
    llama_step: bool = True
    serial_step_work: int = 150_000_000
    pack_weights: bool = True
    shard_rows: bool = True
    shard_merge_work: int = 75_000_000
    scripted_step: bool = True

    def _new_cache(self, model: nn.Module, max_length: int) -> Any:
        from transformers import DynamicCache, StaticCache

        if self.cache == "static":
            return StaticCache(config=model.config, max_cache_len=max_length)
        return DynamicCache(config=model.config)

    def _preallocated(self, model: nn.Module, batch: int, capacity: int, prompt_length: int) -> Any | None:
        """A preallocated KV cache (:mod:`rlhfkit.rl.cached_kv`) when used and the model allows it, else None."""
        if self.cache == "static" or not (self.inplace_kv or self.group_prefill):
            return None
        from rlhfkit.rl.cached_kv import preallocated_cache

        return preallocated_cache(model, batch, capacity, zeroed=prompt_length)

    def _fast_step(self, model: nn.Module, cache: Any, mask: torch.Tensor, shards: int, prompt_length: int
                   ) -> Any | None:
        """The hand-written decode step when enabled and the model is a plain GPT-2 (:mod:`rlhfkit.rl.cached_gpt2`)
        or of the Llama family (:mod:`rlhfkit.rl.cached_llama`); over ``shards`` row shards with caches of their
        own (:mod:`rlhfkit.rl.sharded_decode`) when above 1."""
        from rlhfkit.rl.cached_gpt2 import GPT2Stepper, gpt2_parts
        from rlhfkit.rl.cached_llama import LlamaStepper, llama_parts
        from rlhfkit.rl.scripted_gpt2 import ScriptedGPT2Stepper
        from rlhfkit.rl.scripted_llama import ScriptedLlamaStepper
        from rlhfkit.rl.sharded_decode import ShardedStepper, shard_sizes

        gpt2, llama = (ScriptedGPT2Stepper, ScriptedLlamaStepper) if self.scripted_step else (GPT2Stepper, LlamaStepper)
        choices = ((self.gpt2_step, gpt2_parts, gpt2), (self.llama_step, llama_parts, llama))
        for enabled, parts_of, stepper in choices:
            parts = parts_of(model) if enabled else None
            if parts is not None:
                break
        else:
            return None
        if shards > 1:
            return ShardedStepper(model, *parts, mask, shard_sizes(mask.shape[0], shards), prompt_length, stepper)
        return stepper(*parts, cache, mask)

    def _shards(self, device: torch.device, batch: int, serial_rows: int, merge_rows: int) -> int:
        """Row shards to decode in (:func:`rlhfkit.rl.sharded_decode.decode_shards`; 1 when off or off the CPU)."""
        if not self.shard_rows or device.type != "cpu":
            return 1
        from rlhfkit.rl.sharded_decode import decode_shards

        return decode_shards(batch, torch.get_num_threads(), serial_rows, merge_rows)

    @staticmethod
    def _choose(logits: torch.Tensor, params: SamplingParams, block_eos: torch.Tensor | None,
                generator: torch.Generator | None, row_seeds: torch.Tensor | None = None,
                counter: int = 0, uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, V) raw float32 logits -> chosen tokens (b,) and ``log_softmax(logits / T)`` (b, V);
        ``row_seeds``/``counter`` select per-row uniforms, ``uniform`` gives them drawn (see
        :func:`sample_from_probs`). Row by row: a subset of rows chooses what it would in the whole batch."""
        scaled = logits if params.temperature == 1.0 else logits / params.temperature
        logprobs = torch.log_softmax(scaled, dim=-1)
        if not params.do_sample:
            scores = logits if block_eos is None else logits.index_fill(-1, block_eos, float("-inf"))
            return scores.argmax(dim=-1), logprobs
        probs = sampling_probs(scaled, logprobs, block_eos, params.top_k or 0, params.top_p)
        return sample_from_probs(probs, generator, row_seeds=row_seeds, counter=counter, uniform=uniform), logprobs

    @staticmethod
    def _pick(logits: torch.Tensor, uniform: torch.Tensor | None, params: SamplingParams,
              block_eos: torch.Tensor | None, script: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, V) logits and drawn uniforms -> chosen tokens (b,) and their log-probs (b,); with ``script``, a
        sampling step as one TorchScript function where it compiles (:mod:`rlhfkit.rl.token_draw`: no GIL taken per
        op while row shards pick on two threads; the same tokens)."""
        if script and params.do_sample and uniform is not None and logits.dtype == torch.float32:
            pick = scripted(sampled_pick) or sampled_pick
            return pick(logits, float(params.temperature), uniform, CDF_BLOCK, block_eos, int(params.top_k or 0),
                        float(params.top_p))
        chosen, logprobs = CachedSampler._choose(logits, params, block_eos, None, uniform=uniform)
        return chosen, logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)

    def sample(self, model: nn.Module, tokenizer: Any, prompts: list[str], params: SamplingParams,
               generator: torch.Generator | None = None, *, row_seeds: torch.Tensor | None = None) -> Rollout:
        """Sample one response per prompt with our own KV-cache loop; see :class:`Rollout`.

        ``row_seeds`` (b,) int64 draws row i's tokens from its own counter-based stream
        (:mod:`rlhfkit.rl.row_seeds`) instead of ``generator``: the same row seed gives the same
        response whatever the other rows are (several processes sample shards of one batch).
        """
        device = model_device(model)
        check_row_seeds(row_seeds, len(prompts))
        if self.cache == "static":
            refuse_recurrent(model, self.name)
        prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, device, params.max_new_tokens, _context_length(model))
        eos_ids = eos_token_ids(model, tokenizer)
        attention = self.attention or decode_attention(getattr(model.config, "_attn_implementation", None), device,
                                                       compiled=False)
        with contextlib.ExitStack() as stack:
            for context in (torch.no_grad(), _eval_mode(model), attention_implementation(model, attention),
                            fused_gelu_while(model) if self.fuse_gelu else contextlib.nullcontext(),
                            intra_op_threads_restored()):
                stack.enter_context(context)
            # the Llama step may run, and its concatenated projections replace packed copies (no memory added)
            fuse = self.llama_step and self.inplace_kv and self.cache != "static" and self.pack_weights \
                and packing_applies(model)
            replaced = stack.enter_context(fused_projections_while(model)) if fuse else []
            if self.pack_weights:
                stack.enter_context(packed_linears_while(model, skip=replaced))
            response_ids, logprobs = self._decode(model, tokenizer, prompt_ids, prompt_mask, eos_ids, params, generator,
                                                  None if row_seeds is None else row_seeds.to(device))
        return finalize_rollout(tokenizer, prompts, prompt_ids, prompt_mask, response_ids, logprobs, eos_ids, params)

    def _decode(self, model: nn.Module, tokenizer: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                eos_ids: list[int], params: SamplingParams, generator: torch.Generator | None,
                row_seeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The loop: returns response tokens (b, R) and their log-probs (b, R), R <= max_new_tokens."""
        batch, prompt_length = prompt_ids.shape
        device = prompt_ids.device
        total = prompt_length + params.max_new_tokens
        static = self.cache == "static"
        compact = self.compact and not static
        pad_id = torch.tensor(tokenizer.pad_token_id, device=device)
        eos = torch.tensor(eos_ids, device=device)
        cache = self._preallocated(model, batch, total if self.inplace_kv else prompt_length, prompt_length)
        grouped = cache is not None and self.group_prefill
        inplace = cache is not None and self.inplace_kv
        cache = cache if cache is not None else self._new_cache(model, total)
        cache_kw = cache_argument(model)
        checker = StopStringChecker(tokenizer, params.stop_strings, params.min_new_tokens)
        # Always pass the mask: without one, transformers warns whenever a row holds the pad token
        # (pad == eos fed by finished rows, or an empty prompt's bos); transformers skips an all-ones mask.
        mask = torch.ones((batch, total), dtype=prompt_mask.dtype, device=device)
        mask[:, :prompt_length] = prompt_mask
        if static:
            mask[:, prompt_length:] = 0
        positions = position_ids_from_mask(prompt_mask)
        next_position = positions[:, -1:] + 1
        tokens = torch.full((batch, params.max_new_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)
        token_logprobs = torch.zeros((batch, params.max_new_tokens), dtype=torch.float32, device=device)
        rows = torch.arange(batch, device=device)  # original row of each row still in the batch
        running = torch.ones(batch, dtype=torch.bool, device=device)
        serial_rows = serial_decode_rows(model, device, self.serial_step_work)
        merge_rows = serial_decode_rows(model, device, self.shard_merge_work)
        shards = self._shards(device, batch, serial_rows, merge_rows) if grouped else 1
        fast = self._fast_step(model, cache, mask, shards, prompt_length) if inplace else None
        from rlhfkit.rl.sharded_decode import ShardedStepper

        sharded = isinstance(fast, ShardedStepper)
        if sharded:
            torch.set_num_threads(1)  # each shard steps on one thread; the caller restores the count
        picked: tuple[torch.Tensor, torch.Tensor] | None = None  # a sharded step's (chosen, log-probs)
        # TorchScript's interpreter adds ~10-20 MiB of resident memory the first time it runs a function: the picks
        # run scripted only where the decode steps already do
        script_picks = fast is not None and fast.runs_scripted

        def pick_for(step: int, rows: torch.Tensor) -> tuple[Callable[..., Any], torch.Tensor | None]:
            """The choice of step ``step`` from logits, and its uniforms drawn here for all ``rows`` in order
            (a sharded step slices them per shard, so both paths draw the same numbers)."""
            uniform = None if not params.do_sample else step_uniforms(
                rows.numel(), device, generator, row_seeds=None if row_seeds is None else row_seeds[rows], counter=step)
            block_eos = eos if step < params.min_new_tokens else None
            return functools.partial(self._pick, params=params, block_eos=block_eos, script=script_picks), uniform

        prefill_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
        if grouped:
            from rlhfkit.rl.cached_kv import as_dynamic
            from rlhfkit.rl.cached_prefill import grouped_prefill

            if sharded:
                picked = fast.prefill(prompt_ids, prompt_mask, cache_kw, prefill_kwargs, pick_for(0, rows))
            else:
                logits = grouped_prefill(model, cache, prompt_ids, prompt_mask, cache_kw, prefill_kwargs,
                                         None if fast is None else fast.prefill,
                                         None if fast is None else fast.padding_cost)
            if not self.inplace_kv:
                as_dynamic(cache)
        else:
            logits = model(input_ids=prompt_ids, attention_mask=mask if static else prompt_mask, position_ids=positions,
                           use_cache=True, **prefill_kwargs, **{cache_kw: cache}).logits[:, -1].float()
        for step in range(params.max_new_tokens):
            if picked is None:
                choose, uniform = pick_for(step, rows)
                chosen, chosen_logprobs = choose(logits, uniform)
                del logits
            else:
                (chosen, chosen_logprobs), picked = picked, None
            chosen = torch.where(running, chosen, pad_id)
            tokens[rows, step] = chosen
            token_logprobs[rows, step] = chosen_logprobs
            running &= ~torch.isin(chosen, eos)
            if params.stop_strings:
                running &= ~checker.step(tokens[rows, : step + 1], running)
            active = int(running.sum())
            if step + 1 == params.max_new_tokens or active == 0:
                break
            if compact and active <= self.compact_ratio * rows.numel():
                keep = running.nonzero().flatten()
                if fast is not None:
                    fast.select(keep)  # the step's own cache too
                else:
                    cache.reorder_cache(keep)  # every layer's rows: keys and values, and recurrent states
                rows, mask, next_position = rows[keep], mask[keep], next_position[keep]
                chosen, running = chosen[keep], running[keep]
                if sharded and rows.numel() <= merge_rows:
                    fast, sharded = fast.merged(mask), False
            if rows.numel() <= serial_rows and torch.get_num_threads() > 1:
                torch.set_num_threads(1)  # the caller restores the count (intra_op_threads_restored)
            if static:
                mask[:, prompt_length + step] = 1
            if sharded:
                picked = fast(chosen.unsqueeze(1), next_position, prompt_length + step + 1, pick_for(step + 1, rows))
            elif fast is not None:
                logits = fast(chosen.unsqueeze(1), next_position, prompt_length + step + 1)
            else:
                step_mask = mask if static else mask[:, : prompt_length + step + 1]
                logits = model(input_ids=chosen.unsqueeze(1), attention_mask=step_mask, position_ids=next_position,
                               use_cache=True, **{cache_kw: cache}).logits[:, -1].float()
            next_position = next_position + 1
        return tokens[:, : step + 1], token_logprobs[:, : step + 1]


def serial_decode_rows(model: nn.Module, device: torch.device, serial_step_work: int) -> int:
    """The most rows a decode step may have and still run faster on one intra-op thread (0 off the CPU).

    A decode step at a few rows is dozens of small ops, and each one that PyTorch parallelizes wakes the
    sleeping OpenMP workers (``OMP_WAIT_POLICY=PASSIVE``, which :func:`rlhfkit.utils.runtime.configure_threads`
    sets): ~50 us for a 3-row layer norm on 2 threads against 3 us on one. A second thread pays once the
    products are large. One step of GPT-2s of 4.2M, 41M and 124M parameters (256 x 4 layers, vocabulary
    4,096; 512 x 8, 32,000; 768 x 12, 50,257; weights packed; 2 cores) ran faster on one thread up to ~64,
    ~8 and ~3 rows (rows x parameters, the step's multiply-adds, up to ~3e8), but in whole rollouts of the
    smallest (bench/rollout.py) 64 rows sampled faster on two threads (wall time, 15%) and 32 rows on one:
    the default, 1.5e8, keeps one thread for the rows where both measurements agree.
    """
    if device.type != "cpu" or serial_step_work <= 0:
        return 0
    parameters = sum(p.numel() for p in model.parameters())
    return serial_step_work // max(parameters, 1)


SAMPLERS = ("hf", "cached", "cached-static", "compiled")
PER_ROW_UNSUPPORTED = ("generation.backend=hf cannot seed each row (transformers generate draws from one global "
                       "generator); use backend cached, cached-static or compiled, or set generation.seed_per_row=never")


def make_sampler(name: str = "hf") -> Sampler:
    """The sampler called ``name``: ``hf`` (transformers generate); ours: ``cached``, ``cached-static``, ``compiled``."""
    match name:
        case "hf":
            return HFGenerateSampler()
        case "cached":
            return CachedSampler(cache="dynamic")
        case "cached-static":
            return CachedSampler(cache="static", name="cached-static")
        case "compiled":
            from rlhfkit.rl.compiled_sampler import CompiledSampler

            return CompiledSampler()
    raise ValueError(f"unknown sampler {name!r}; choose one of {list(SAMPLERS)}")
