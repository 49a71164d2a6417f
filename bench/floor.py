"""The irreducible work of a trainer step on the bench shapes, timed without any trainer around it.

A step's floor is: one sampling pass with a static KV cache (where the step samples), one forward
of each frozen model, one forward+backward of each trained model per mini-batch, and one optimizer
step per mini-batch. The pieces here are as small as correctness allows:

- sampling: a hand-written decode loop over the model's own weights (GPT-2, or a Llama-family model: RMS
  norms, Qwen3's per-head query/key norms, rotary positions, grouped-query attention, SwiGLU) with
  preallocated K/V tensors (no masks: every bench prompt is exactly 16 tokens), each distinct prompt in one
  pass, then one token per step, EOS suppressed as min_new_tokens does; checked against the model's forward;
- policy forwards: each distinct prompt once (a GRPO group's, a DPO pair's rows read its keys and
  values), the trunk once over the rest, the LM head only at the response positions, log-softmax and
  gather fused and chunked (as the trainers do);
- reward model: trunk + scalar head at the last token, the prompts run once, the last block only at
  the last token; critic: trunk + value head;
- optimizer: fused AdamW (one call per mini-batch over every trained parameter), no clipping,
  no scheduler, no logging.

``overhead = step_s / floor_s - 1``: what the trainer spends beyond this work.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class StaticDecoder:
    """GPT-2 sampling with a preallocated (layers, 2, B, H, P+N, D) KV cache and no per-token host sync."""

    def __init__(self, model: nn.Module, batch: int, prompt_len: int, new_tokens: int, eos_id: int | None) -> None:
        self.model, self.t = model, model.transformer
        cfg = model.config
        self.heads, self.dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.batch, self.prompt_len, self.new_tokens, self.eos_id = batch, prompt_len, new_tokens, eos_id
        total = prompt_len + new_tokens
        param = next(model.parameters())
        self.cache = torch.zeros(cfg.n_layer, 2, batch, self.heads, total, self.dim, dtype=param.dtype)
        self.eps = cfg.layer_norm_epsilon

    def _cached(self, index: int, k: torch.Tensor, v: torch.Tensor, start: int,
                rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (b, kv heads, t, d) keys and values at ``start`` of layer ``index``'s cache; return what the
        queries attend to: the new keys alone in a prefill of some rows, else every row's cache up to them."""
        end = start + k.shape[2]
        k, v = k.to(self.cache.dtype), v.to(self.cache.dtype)  # under autocast rotary keys may come out float32
        if rows is not None:
            self.cache[index, 0, rows, :, start:end] = k
            self.cache[index, 1, rows, :, start:end] = v
            return k, v
        self.cache[index, 0, :, :, start:end] = k
        self.cache[index, 1, :, :, start:end] = v
        return self.cache[index, 0, :, :, :end], self.cache[index, 1, :, :, :end]

    def _block(self, index: int, block: nn.Module, x: torch.Tensor, start: int,
               rows: torch.Tensor | None = None) -> torch.Tensor:
        b, t, e = x.shape
        h = F.layer_norm(x, (e,), block.ln_1.weight, block.ln_1.bias, self.eps)
        qkv = torch.addmm(block.attn.c_attn.bias, h.view(-1, e), block.attn.c_attn.weight).view(b, t, 3, self.heads, self.dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        keys, values = self._cached(index, k, v, start, rows)
        attn = F.scaled_dot_product_attention(q, keys, values, is_causal=t > 1)
        attn = attn.transpose(1, 2).reshape(b * t, e)
        x = x + torch.addmm(block.attn.c_proj.bias, attn, block.attn.c_proj.weight).view(b, t, e)
        h = F.layer_norm(x, (e,), block.ln_2.weight, block.ln_2.bias, self.eps).view(-1, e)
        h = F.gelu(torch.addmm(block.mlp.c_fc.bias, h, block.mlp.c_fc.weight), approximate="tanh")
        return x + torch.addmm(block.mlp.c_proj.bias, h, block.mlp.c_proj.weight).view(b, t, e)

    def _logits(self, ids: torch.Tensor, start: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        t = ids.shape[1]
        x = self.t.wte(ids) + self.t.wpe.weight[start:start + t]
        for index, block in enumerate(self.t.h):
            x = self._block(index, block, x, start, rows)
        x = F.layer_norm(x[:, -1], (x.shape[-1],), self.t.ln_f.weight, self.t.ln_f.bias, self.eps)
        return x @ self.model.lm_head.weight.t()

    @torch.inference_mode()
    def sample(self, prompt_ids: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) prompts -> (B, N) sampled tokens (temperature 1) and their (B, N) log-probs."""
        tokens = torch.empty(self.batch, self.new_tokens, dtype=torch.long)
        logps = torch.empty(self.batch, self.new_tokens)
        from rlhfkit.models.shared_prefix import prefix_groups

        groups = prefix_groups(prompt_ids, torch.ones_like(prompt_ids), self.prompt_len)
        first, group = groups.representatives, groups.group_of_row
        logits = self._logits(prompt_ids[first], 0, first)[group]
        self.cache[:, :, :, :, :self.prompt_len] = self.cache[:, :, first[group], :, :self.prompt_len]
        for step in range(self.new_tokens):
            if self.eos_id is not None:
                logits[:, self.eos_id] = -math.inf
            logp = torch.log_softmax(logits, dim=-1)
            # Gumbel-max: one exponential draw per logit, no host sync (same law as multinomial)
            noise = torch.empty_like(logp).exponential_(generator=generator)
            token = (logp - noise.log()).argmax(dim=-1, keepdim=True)
            tokens[:, step:step + 1] = token
            logps[:, step:step + 1] = logp.gather(-1, token)
            if step + 1 < self.new_tokens:
                logits = self._logits(token, self.prompt_len + step)
        return tokens, logps

    @torch.inference_mode()
    def check(self, prompt_ids: torch.Tensor) -> float:
        """Max |log-prob| difference between this decoder's samples and one forward of the model."""
        tokens, logps = self.sample(prompt_ids, torch.Generator().manual_seed(0))
        ids = torch.cat([prompt_ids, tokens], dim=1)
        ref = response_logprobs(self.model, ids, self.prompt_len, no_eos=self.eos_id)
        return float((ref - logps).abs().max())


def rotate_half_positions(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of (b, h, t, d) queries or keys with (1, 1, t, d) cos/sin (transformers' layout:
    the first and second halves of each head form the rotated pairs)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class LlamaStaticDecoder(StaticDecoder):
    """:class:`StaticDecoder` for Llama, Qwen2, Qwen3 and Mistral blocks (no sliding window): a
    (layers, 2, B, KV heads, P+N, D) cache, rotary tables computed once for every position."""

    def __init__(self, model: nn.Module, batch: int, prompt_len: int, new_tokens: int, eos_id: int | None) -> None:
        self.model, self.t = model, model.model
        cfg = model.config
        attn = self.t.layers[0].self_attn
        self.heads, self.kv_heads, self.dim = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
        self.head_norms = hasattr(attn, "q_norm")
        self.batch, self.prompt_len, self.new_tokens, self.eos_id = batch, prompt_len, new_tokens, eos_id
        total = prompt_len + new_tokens
        param = next(model.parameters())
        self.cache = torch.zeros(cfg.num_hidden_layers, 2, batch, self.kv_heads, total, self.dim, dtype=param.dtype)
        self.eps = cfg.rms_norm_eps
        with torch.no_grad():
            cos, sin = self.t.rotary_emb(param, torch.arange(total)[None])
        self.cos, self.sin = cos[:, None], sin[:, None]

    def _norm(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, self.eps)

    def _block(self, index: int, layer: nn.Module, x: torch.Tensor, start: int,  # type: ignore[override]
               rows: torch.Tensor | None = None) -> torch.Tensor:
        b, t, e = x.shape
        attn, mlp = layer.self_attn, layer.mlp
        h = self._norm(x, layer.input_layernorm)
        q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(b, t, self.heads, self.dim)
        k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(b, t, self.kv_heads, self.dim)
        v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(b, t, self.kv_heads, self.dim).transpose(1, 2)
        if self.head_norms:
            q, k = self._norm(q, attn.q_norm), self._norm(k, attn.k_norm)
        end = start + t
        cos, sin = self.cos[:, :, start:end], self.sin[:, :, start:end]
        q, k = rotate_half_positions(q.transpose(1, 2), cos, sin), rotate_half_positions(k.transpose(1, 2), cos, sin)
        keys, values = self._cached(index, k, v, start, rows)
        context = F.scaled_dot_product_attention(q, keys, values, is_causal=t > 1,
                                                 enable_gqa=self.kv_heads != self.heads)
        x = x + F.linear(context.transpose(1, 2).reshape(b, t, -1), attn.o_proj.weight)
        h = self._norm(x, layer.post_attention_layernorm)
        gated = F.silu(F.linear(h, mlp.gate_proj.weight)) * F.linear(h, mlp.up_proj.weight)
        return x + F.linear(gated, mlp.down_proj.weight)

    def _logits(self, ids: torch.Tensor, start: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        x = self.t.embed_tokens(ids)
        for index, layer in enumerate(self.t.layers):
            x = self._block(index, layer, x, start, rows)
        return self._norm(x[:, -1], self.t.norm) @ self.model.lm_head.weight.t()


def static_decoder(model: nn.Module, batch: int, prompt_len: int, new_tokens: int, eos_id: int | None) -> StaticDecoder:
    """The floor's decoder for ``model``: GPT-2 or a Llama-family causal LM (a clear error otherwise)."""
    from rlhfkit.rl.cached_llama import LLAMA_FAMILY

    name = type(model).__name__
    if name == "GPT2LMHeadModel":
        return StaticDecoder(model, batch, prompt_len, new_tokens, eos_id)
    if name in LLAMA_FAMILY and not getattr(model.config, "sliding_window", None):
        return LlamaStaticDecoder(model, batch, prompt_len, new_tokens, eos_id)
    raise ValueError(f"bench/floor.py has no decoder for {name}: GPT-2 or one of {', '.join(LLAMA_FAMILY)}")


def prompt_cache(trunk: nn.Module, ids: torch.Tensor, length: int) -> Any:
    """The KV cache of each row's first ``length`` tokens, each distinct prefix run once (differentiable), as the
    trainers share prompts (``rlhfkit.models.shared_prefix``); None when no prefix repeats enough to pay."""
    from rlhfkit.models.shared_prefix import shared_prefix

    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    shared = shared_prefix(trunk, ids, torch.ones_like(ids), positions, length)
    return None if shared is None else shared.for_rows(slice(None))


def response_logprobs(model: nn.Module, ids: torch.Tensor, prompt_len: int, no_eos: int | None = None) -> torch.Tensor:
    """Log-probs of ids[:, prompt_len:] under a causal LM: each distinct prompt once, the trunk once over the
    rest, LM head only where needed, log-softmax + gather fused and chunked (``rlhfkit.rl.logprobs.fused_logprobs``)."""
    from rlhfkit.rl.logprobs import fused_logprobs

    trunk = model.base_model
    cache = prompt_cache(trunk, ids, prompt_len - 1)
    if cache is None:
        hidden = trunk(input_ids=ids, use_cache=False).last_hidden_state[:, prompt_len - 1:-1]
    else:
        hidden = trunk(input_ids=ids[:, prompt_len - 1:], **{cache.argument: cache.cache}).last_hidden_state[:, :-1]
    logits = model.get_output_embeddings()(hidden.reshape(-1, hidden.shape[-1]))
    if no_eos is not None:
        logits = logits.clone()
        logits[..., no_eos] = -math.inf
    tokens = ids[:, prompt_len:]
    return fused_logprobs(logits, tokens.reshape(-1))[0].view(tokens.shape)


def reward_scores(reward_model: nn.Module, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """A rlhfkit RewardModel's scalar at the last token (no padding on the bench shapes), each distinct prompt
    run once and the trunk's last block only at the last token, as the model does (``rlhfkit.models.last_token``)."""
    from rlhfkit.models.last_token import last_token_hidden, supports_last_token

    trunk = reward_model.backbone
    cache = prompt_cache(trunk, ids, prompt_len)
    if supports_last_token(trunk):
        last = torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        hidden = last_token_hidden(trunk, ids, torch.ones_like(ids), last, cache)
    elif cache is None:
        hidden = trunk(input_ids=ids, use_cache=False).last_hidden_state[:, -1]
    else:
        hidden = trunk(input_ids=ids[:, prompt_len:], **{cache.argument: cache.cache}).last_hidden_state[:, -1]
    return reward_model.head(hidden).squeeze(-1)


def critic_values(critic: nn.Module, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """A CriticModel's values at the positions that predict the response tokens."""
    hidden = critic.trunk(input_ids=ids, use_cache=False).last_hidden_state[:, prompt_len - 1:-1]
    return critic.value_head(hidden)


def fused_adamw(*models: nn.Module, lr: float = 1e-5) -> torch.optim.Optimizer:
    """One fused AdamW over every trainable parameter (plain foreach where fused is unavailable)."""
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trained_copy(model: nn.Module) -> nn.Module:
    """A trainable copy (the floor must not move the trainer's weights)."""
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone.eval()  # dropout off, as the trainers run


def summary(step_s: float, floor_s: float, parts: dict[str, float] | None = None,
            step_cpu_s: float | None = None) -> dict[str, Any]:
    """The JSON fields: floor_s, overhead and the floor's parts in seconds; with the step's process CPU
    seconds also ``overhead_cpu`` (CPU time is less skewed than wall time by other load)."""
    parts = dict(parts or {})
    floor_cpu = parts.pop("cpu_total", None)
    out: dict[str, Any] = {"step_s": round(step_s, 4), "floor_s": round(floor_s, 4),
                           "overhead": round(step_s / floor_s - 1.0, 3)}
    if step_cpu_s is not None and floor_cpu:
        out.update({"step_cpu_s": round(step_cpu_s, 4), "floor_cpu_s": round(floor_cpu, 4),
                    "overhead_cpu": round(step_cpu_s / floor_cpu - 1.0, 3)})
    if parts:
        out["floor_parts_s"] = {k: round(v, 4) for k, v in parts.items()}
    return out


class PartTimer:
    """Accumulates wall seconds per named part over the timed floor calls."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls = 0

    def part(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = fn()
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - started
        return out

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.calls, 1) for k, v in self.totals.items()}


def onpolicy_floor(policy: nn.Module, reward_model: nn.Module, prompt_ids: torch.Tensor, new_tokens: int,
                   minibatches: int, critic: nn.Module | None = None, eos_id: int | None = None,
                   repeats: int = 3, lr: float = 1e-5, dtype: str = "float32") -> tuple[float, dict[str, float], float]:
    """Floor of one GRPO/PPO step on (B, P) prompts (rows already repeated per group):
    sample, reference forward, reward forward, [critic values], then per mini-batch one
    forward+backward of the policy [and critic] and one optimizer step; forwards in ``dtype`` (:func:`compute`).
    Returns (median seconds, mean seconds per part, decoder-vs-forward max log-prob error)."""
    batch, prompt_len = prompt_ids.shape
    policy_t = fast(trained_copy(policy))
    reference = fast(copy.deepcopy(policy).eval().requires_grad_(False))
    critic_t = fast(trained_copy(critic)) if critic is not None else None
    decoder = static_decoder(policy_t, batch, prompt_len, new_tokens, eos_id)
    decoder.cache = decoder.cache.to(getattr(torch, dtype))  # keys and values in the compute dtype
    with compute(dtype):
        error = decoder.check(prompt_ids)
    optimizer = fused_adamw(policy_t, *([critic_t] if critic_t is not None else []), lr=lr)
    generator = torch.Generator().manual_seed(0)
    timer = PartTimer()
    size = batch // minibatches

    def step() -> None:
        with compute(dtype):
            tokens, old_logps = timer.part("sample", lambda: decoder.sample(prompt_ids, generator))
        ids = torch.cat([prompt_ids, tokens], dim=1)
        with torch.inference_mode():  # the reward model scores in float32, as the trainers' does
            with compute(dtype):
                ref = timer.part("reference", lambda: response_logprobs(reference, ids, prompt_len, eos_id).float())
            scores = timer.part("reward", lambda: reward_scores(reward_model, ids, prompt_len))
            with compute(dtype):
                values = timer.part("critic_values", lambda: critic_values(critic_t, ids, prompt_len).float()) \
                    if critic_t is not None else None
        advantages = (scores[:, None] - 0.04 * (old_logps - ref)).clone()
        returns = values.clone() + advantages if values is not None else None

        def train(rows: slice) -> None:
            with compute(dtype):
                logps = response_logprobs(policy_t, ids[rows], prompt_len, eos_id).float()
                loss = -(torch.exp(logps - old_logps[rows]) * advantages[rows]).mean()
                if critic_t is not None:
                    values_now = critic_values(critic_t, ids[rows], prompt_len).float()
                    loss = loss + 0.5 * (values_now - returns[rows]).square().mean()
            loss.backward()

        for start in range(0, batch, size):
            timer.part("forward_backward", lambda: train(slice(start, start + size)))
            timer.part("optimizer", lambda: optimizer_step(optimizer))

    step()  # warm-up (allocator, first calls)
    return timed(step, timer, repeats) + (error,)


def timed(step: Callable[[], Any], timer: PartTimer, repeats: int) -> tuple[float, dict[str, float]]:
    """Median wall seconds of ``repeats`` calls (after the caller's warm-up) and mean seconds per part
    (with ``cpu_total``: the median process CPU seconds of a call)."""
    timer.totals.clear()
    times, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    timer.calls = repeats
    timer.totals["cpu_total"] = statistics.median(cpu) * repeats  # so that mean() gives the median CPU seconds
    return statistics.median(times), timer.mean()


def fast(model: nn.Module) -> nn.Module:
    """The fused tanh GELU the trainers use (rlhfkit.models.gelu.fuse_gelu)."""
    from rlhfkit.models.gelu import fuse_gelu

    fuse_gelu(model)
    return model


def compute(dtype: str) -> Any:
    """The forwards' precision: nothing for float32, CPU autocast for bfloat16 (float32 master weights)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=getattr(torch, dtype))


def preference_floor(policy: nn.Module, batches: list[torch.Tensor], prompt_len: int, beta: float = 0.1,
                     lr: float = 1e-5, dtype: str = "float32") -> tuple[float, dict[str, float]]:
    """Floor of a DPO epoch: one reference forward per batch (log-probs computed once), then per batch
    one policy forward+backward over its (2B, T) chosen-then-rejected rows and one optimizer step.
    One warm-up over 2 batches first, then one timed epoch. Forwards in ``dtype`` (:func:`compute`)."""
    policy_t = fast(trained_copy(policy))
    reference = fast(copy.deepcopy(policy).eval().requires_grad_(False))
    optimizer = fused_adamw(policy_t, lr=lr)
    timer = PartTimer()

    def epoch(chunk: list[torch.Tensor]) -> None:
        with torch.inference_mode(), compute(dtype):
            refs = [timer.part("reference", lambda ids=ids: response_logprobs(reference, ids, prompt_len).sum(-1))
                    for ids in chunk]

        def train(ids: torch.Tensor, ref: torch.Tensor) -> None:
            with compute(dtype):
                logps = response_logprobs(policy_t, ids, prompt_len)
            margin = (logps.sum(-1) - ref).view(2, -1)
            (-F.logsigmoid(beta * (margin[0] - margin[1]))).mean().backward()

        for ids, ref in zip(chunk, refs):
            timer.part("forward_backward", lambda: train(ids, ref))
            timer.part("optimizer", lambda: optimizer_step(optimizer))

    epoch(batches[:2])
    return timed(lambda: epoch(batches), timer, 1)


def reward_floor(reward_model: nn.Module, batches: list[torch.Tensor], prompt_len: int, lr: float = 1e-4,
                 dtype: str = "float32") -> tuple[float, dict[str, float]]:
    """Floor of a reward-model epoch: per batch one forward+backward of trunk + head over its (2B, T)
    chosen-then-rejected rows (Bradley-Terry loss; each pair's prompt run once) and one optimizer step; 2 warm-up batches first.
    Forwards in ``dtype`` (:func:`compute`)."""
    model = fast(trained_copy(reward_model))
    optimizer = fused_adamw(model, lr=lr)
    timer = PartTimer()

    def train(ids: torch.Tensor) -> None:
        with compute(dtype):
            scores = reward_scores(model, ids, prompt_len).float().view(2, -1)
        (-F.logsigmoid(scores[0] - scores[1])).mean().backward()

    def epoch(chunk: list[torch.Tensor]) -> None:
        for ids in chunk:
            timer.part("forward_backward", lambda: train(ids))
            timer.part("optimizer", lambda: optimizer_step(optimizer))

    epoch(batches[:2])
    return timed(lambda: epoch(batches), timer, 1)
