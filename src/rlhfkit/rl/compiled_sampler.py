"""A fixed-shape decode loop over a static KV cache whose model step can be ``torch.compile``-d.

Shapes never change during a rollout, so one compiled graph serves every step and every later call
of the same size: the batch is padded up to a bucket (filler rows copy row 0 and emit only pad),
the cache length is rounded up, finished rows keep running on the pad token with their outputs
masked (never dropped, so no recompile), the attention mask and positions are updated in place,
and whether any row is still running is read back only every ``sync_every`` steps. Run eagerly
(the default for small CPU runs, where compilation costs more than it saves), running rows move
into a smaller bucket once they fit in half of it, so long tails cost only the rows still
generating. On CUDA the step is compiled with ``mode="reduce-overhead"`` (CUDA graphs), whose
warm-up is not measured here (no GPU on the development machine). Token choice reuses ``CachedSampler``'s
``_choose`` (same filtering, inverse-CDF sampling and per-row seeds; with ``row_seeds`` a row draws
what ``cached`` draws for it, with a generator the bucket's extra rows take their own uniforms).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rlhfkit.models.positions import position_ids_from_mask
from rlhfkit.models.recurrent import refuse_recurrent
from rlhfkit.models.signature import cache_argument, forward_parameters
from rlhfkit.rl.rollout import (CachedSampler, Rollout, SamplingParams, StopStringChecker, _context_length, _eval_mode,
                                attention_implementation, check_row_seeds, decode_attention, encode_prompts,
                                eos_token_ids, finalize_rollout, model_device)

# Compile on CPU only when a call decodes at least this many row-tokens (padded batch x new tokens):
# inductor's warm-up costs tens of seconds per process and shape on 2 cores, more than small runs take.
CPU_COMPILE_MIN_ROW_TOKENS = 1 << 20


def batch_bucket(batch: int) -> int:
    """The padded batch size: the next power of two up to 64, then the next multiple of 64."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if batch <= 64:
        return 1 << (batch - 1).bit_length()
    return -(-batch // 64) * 64


def cache_bucket(length: int, multiple: int = 32) -> int:
    """The static cache length: ``length`` rounded up to a multiple of ``multiple``."""
    return -(-length // multiple) * multiple


def should_compile(device: torch.device, padded_batch: int, new_tokens: int) -> bool:
    """Compile on CUDA always; on CPU only when the decode is large enough to repay inductor's warm-up."""
    return device.type == "cuda" or padded_batch * new_tokens >= CPU_COMPILE_MIN_ROW_TOKENS


def _shrink_cache(cache: Any, keep: torch.Tensor, static_addresses: bool) -> None:
    """Keep rows ``keep`` of every cache layer (a smaller bucket); re-mark the new tensors for CUDA graphs."""
    cache.reorder_cache(keep)
    if static_addresses:
        for layer in cache.layers:
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)


def _step_logits(model: nn.Module, cache_kw: str, cache: Any, ids: torch.Tensor, mask: torch.Tensor,
                 positions: torch.Tensor) -> torch.Tensor:
    """One decode step: (b, 1) ids over the cache -> (b, V) float32 logits of the next token."""
    output = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_kw: cache})
    return output.logits[:, -1].float()


_COMPILED: dict[tuple[str, str], Callable[..., torch.Tensor]] = {}


def compiled_step(device: torch.device, backend: str = "inductor") -> Callable[..., torch.Tensor]:
    """``_step_logits`` compiled once per process, device type and backend (CUDA graphs with inductor on CUDA)."""
    key = (device.type, backend)
    if key not in _COMPILED:
        mode = "reduce-overhead" if device.type == "cuda" and backend == "inductor" else None
        _COMPILED[key] = torch.compile(_step_logits, backend=backend, dynamic=False, mode=mode)
    return _COMPILED[key]


@dataclasses.dataclass
class CompiledSampler:
    """Static-cache sampling with fixed shapes; ``compile=None`` compiles when :func:`should_compile` says so.

    Same :class:`Rollout` as the other backends: greedy tokens equal ``hf``'s, log-probs equal a
    forward pass. ``sync_every`` is how many steps pass between reads of the running flags (``None``:
    every step on CPU, where a read costs nothing, every 8 on an accelerator); at those
    reads, ``compact`` moves the running rows into a smaller bucket once they fit in half the current
    one (each bucket size is one more shape to compile, so ``None`` = only when not compiling).
    ``compile_backend`` is the ``torch.compile`` backend (tests trace with ``aot_eager``, no codegen).
    ``attention``: the attention implementation while sampling (``None``: ``eager`` for an SDPA model
    run eagerly on CPU, where PyTorch's fused CPU kernel is slower for one query token, see
    :func:`~rlhfkit.rl.rollout.decode_attention`; otherwise the model's own).
    """

    compile: bool | None = None
    compact: bool | None = None
    sync_every: int | None = None
    compile_backend: str = "inductor"
    attention: str | None = None
    name: str = "compiled"

    def __post_init__(self) -> None:
        if self.sync_every is not None and self.sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {self.sync_every}")

    def sample(self, model: nn.Module, tokenizer: Any, prompts: list[str], params: SamplingParams,
               generator: torch.Generator | None = None, *, row_seeds: torch.Tensor | None = None) -> Rollout:
        """Sample one response per prompt with the fixed-shape loop; ``row_seeds`` as in ``CachedSampler``."""
        device = model_device(model)
        check_row_seeds(row_seeds, len(prompts))
        refuse_recurrent(model, self.name)
        new_tokens = params.max_new_tokens
        prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, device, new_tokens, _context_length(model))
        eos_ids = eos_token_ids(model, tokenizer)
        compile_now = self.compile if self.compile is not None else should_compile(device, batch_bucket(len(prompts)),
                                                                                     new_tokens)
        attention = self.attention or decode_attention(getattr(model.config, "_attn_implementation", None), device,
                                                       compile_now)
        with torch.no_grad(), _eval_mode(model), attention_implementation(model, attention):
            seeds = None if row_seeds is None else row_seeds.to(device)
            response_ids, logprobs = self._decode(compile_now, model, tokenizer, prompt_ids, prompt_mask, eos_ids,
                                                  params, generator, seeds)
        return finalize_rollout(tokenizer, prompts, prompt_ids, prompt_mask, response_ids, logprobs, eos_ids, params)

    def _decode(self, compile_now: bool, model: nn.Module, tokenizer: Any, prompt_ids: torch.Tensor,
                prompt_mask: torch.Tensor, eos_ids: list[int], params: SamplingParams,
                generator: torch.Generator | None, row_seeds: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill, then fixed-shape steps -> (b, R) tokens and (b, R) log-probs of the real rows."""
        from transformers import StaticCache

        batch, prompt_length = prompt_ids.shape
        device = prompt_ids.device
        new_tokens = params.max_new_tokens
        padded = batch_bucket(batch)
        fill = torch.zeros(padded - batch, dtype=torch.long, device=device)  # extra rows copy row 0
        ids = torch.cat([prompt_ids, prompt_ids[fill]])
        seeds = None if row_seeds is None else torch.cat([row_seeds, row_seeds[fill]])
        mask = torch.zeros((padded, cache_bucket(prompt_length + new_tokens)), dtype=prompt_mask.dtype, device=device)
        mask[:, :prompt_length] = torch.cat([prompt_mask, prompt_mask[fill]])
        positions = position_ids_from_mask(mask[:, :prompt_length])
        cache = StaticCache(config=model.config, max_cache_len=mask.shape[1])
        cache_kw = cache_argument(model)
        step_fn = compiled_step(device, self.compile_backend) if compile_now else _step_logits
        compact = self.compact if self.compact is not None else not compile_now
        sync_every = self.sync_every or (1 if device.type == "cpu" else 8)
        graphs = compile_now and device.type == "cuda" and self.compile_backend == "inductor"

        pad_id = torch.tensor(tokenizer.pad_token_id, device=device)
        eos = torch.tensor(eos_ids, device=device)
        checker = StopStringChecker(tokenizer, params.stop_strings, params.min_new_tokens)
        checker.window += sync_every  # a check every k steps must see stops completed up to k tokens ago
        # Outputs of batch row i go to row rows[i]; row ``padded`` is scratch for the filler rows of a shrunk bucket.
        tokens = torch.full((padded + 1, new_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)
        token_logprobs = torch.zeros((padded + 1, new_tokens), dtype=torch.float32, device=device)
        rows = torch.arange(padded, device=device)
        running = torch.arange(padded, device=device) < batch  # filler rows emit pad from the start
        emitting = torch.zeros(new_tokens, dtype=torch.bool, device=device)  # some row still sampled at step t
        prefill_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in forward_parameters(model) else {}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                       **prefill_kwargs, **{cache_kw: cache}).logits[:, -1].float()
        next_position = positions[:, -1:] + 1
        for step in range(new_tokens):
            block_eos = eos if step < params.min_new_tokens else None
            chosen, step_logprobs = CachedSampler._choose(logits, params, block_eos, generator, seeds, step)
            chosen = torch.where(running, chosen, pad_id)
            emitting[step] = running.any()
            tokens[rows, step] = chosen
            token_logprobs[rows, step] = step_logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
            running &= ~torch.isin(chosen, eos)
            last = step + 1 == new_tokens
            if last or (step + 1) % sync_every == 0:
                if params.stop_strings:
                    running &= ~checker.step(tokens[rows, : step + 1], running)
                active = int(running.sum())
                if last or active == 0:
                    break
                if compact and batch_bucket(active) <= rows.numel() // 2:
                    size = batch_bucket(active)
                    keep = running.nonzero().flatten()
                    keep = torch.cat([keep, keep[:1].expand(size - active)])
                    _shrink_cache(cache, keep, compile_now)
                    rows = torch.cat([rows[keep[:active]], torch.full((size - active,), padded, device=device)])
                    mask, next_position, chosen, running = mask[keep], next_position[keep], chosen[keep], running[keep]
                    running[active:] = False
                    seeds = None if seeds is None else seeds[keep]
            mask[:, prompt_length + step] = 1
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are consumed: reuse their memory
            logits = step_fn(model, cache_kw, cache, chosen.unsqueeze(1), mask, next_position)
            next_position += 1
        width = int(emitting.nonzero()[-1]) + 1  # steps run past the last end until the next read are dropped
        return tokens[:batch, :width], token_logprobs[:batch, :width]
