"""Decoding a GPT-2 batch as row shards on threads: the same tokens and log-probs as one batch (greedy, sampled,
filtered, EOS blocked, per-row seeds), shards merged back when the batch shrinks, the thread count restored,
one-thread runs left unsharded, shards under the caller's autocast."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from rlhfkit.rl.cached_kv import concatenated, preallocated_cache
from rlhfkit.rl.rollout import CachedSampler, SamplingParams
from rlhfkit.rl.sharded_decode import ShardedStepper, decode_shards, shard_sizes
from rlhfkit.utils.runtime import worker_pool

PROMPTS = ["The movie was great", "Hi", "What a lovely day! The sun is", "Stop.", "A", "The food was bad and",
           "Tell me why", "Sky"]


def test_shard_sizes_split_rows_evenly_in_order() -> None:
    assert shard_sizes(7, 2) == [4, 3]
    assert shard_sizes(8, 2) == [4, 4]
    assert shard_sizes(5, 3) == [2, 2, 1]
    assert sum(shard_sizes(13, 4)) == 13


def test_decode_shards_one_per_thread_only_between_the_merge_and_serial_limits() -> None:
    assert decode_shards(64, 2, serial_rows=35, merge_rows=17) == 2
    assert decode_shards(64, 4, serial_rows=35, merge_rows=17) == 4
    assert decode_shards(71, 2, serial_rows=35, merge_rows=17) == 1  # 36 rows per shard: too many for one thread
    assert decode_shards(17, 2, serial_rows=35, merge_rows=17) == 1  # small enough for one thread alone
    assert decode_shards(64, 1, serial_rows=35, merge_rows=17) == 1
    assert decode_shards(3, 4, serial_rows=35, merge_rows=0) == 1  # a shard without a row
    assert decode_shards(64, 2, serial_rows=0, merge_rows=0) == 1  # a model too large for one-thread steps


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sample(sampler: CachedSampler, model, tokenizer, params: SamplingParams, seed: int,
            row_seeds: torch.Tensor | None = None):
    return sampler.sample(model, tokenizer, PROMPTS, params, generator=torch.Generator().manual_seed(seed),
                          row_seeds=row_seeds)


SETTINGS = {"greedy": {"do_sample": False}, "sample": {"do_sample": True},
            "top-k, min tokens": {"do_sample": True, "top_k": 20, "min_new_tokens": 3},
            "row seeds": {"do_sample": True, "top_p": 0.9}}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("merge_at_rows", [0, 6])
def test_sharded_rollout_equals_one_batch_and_restores_threads(eos_model, tokenizer, monkeypatch, setting,
                                                               merge_at_rows) -> None:
    from rlhfkit.rl import sharded_decode

    built, merged, allocated = [], [], []
    original_init, original_merged = ShardedStepper.__init__, ShardedStepper.merged

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        built.append(list(self.sizes))
        allocated.append(all(layer.is_initialized and layer.key_buffer.shape[0] == size
                             for stepper, size in zip(self.steppers, self.sizes) for layer in stepper.cache.layers))

    def recording_merged(self, mask):
        merged.append(list(self.sizes))
        return original_merged(self, mask)

    monkeypatch.setattr(sharded_decode.ShardedStepper, "__init__", recording_init)
    monkeypatch.setattr(sharded_decode.ShardedStepper, "merged", recording_merged)
    params = SamplingParams(max_new_tokens=12, temperature=0.9, **SETTINGS[setting])
    seeds = torch.arange(len(PROMPTS)) * 7919 if setting == "row seeds" else None
    parameters = _parameters(eos_model)
    sharded_sampler = CachedSampler(shard_merge_work=merge_at_rows * parameters)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sharded = _sample(sharded_sampler, eos_model, tokenizer, params, seed=3, row_seeds=seeds)
        assert torch.get_num_threads() == 2
        one_batch = _sample(CachedSampler(shard_rows=False), eos_model, tokenizer, params, seed=3, row_seeds=seeds)
    finally:
        torch.set_num_threads(threads)
    assert built == [[4, 4]]
    assert allocated == [True]  # in this thread, before any shard ran: the pool thread's heap keeps no cache
    if merge_at_rows and setting == "sample":
        assert merged and sum(merged[0]) <= merge_at_rows  # finished rows dropped, then one batch again
    assert torch.equal(sharded.response_ids, one_batch.response_ids)
    torch.testing.assert_close(sharded.logprobs, one_batch.logprobs, atol=1e-5, rtol=0)
    assert torch.equal(sharded.response_mask, one_batch.response_mask)


def test_no_shards_on_one_thread(eos_model, tokenizer, monkeypatch) -> None:
    from rlhfkit.rl import sharded_decode

    built = []
    monkeypatch.setattr(sharded_decode.ShardedStepper, "__init__",
                        lambda self, *args, **kwargs: built.append(args) or pytest.fail("sharded"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _sample(CachedSampler(shard_merge_work=1), eos_model, tokenizer, SamplingParams(max_new_tokens=4), seed=0)
    finally:
        torch.set_num_threads(threads)
    assert built == []


def test_shards_under_bf16_autocast_step_in_bf16_like_one_batch(eos_model, tokenizer, monkeypatch) -> None:
    """Autocast is per thread; the pool thread's shard runs under the caller's (:func:`across_threads`), so a
    sharded bf16 rollout is one batch's: the same tokens, log-probs within bf16 rounding, and both away from
    float32's (were one shard in float32, its rows would match float32 instead)."""
    from rlhfkit.rl import sharded_decode

    built = []
    original_init = ShardedStepper.__init__
    monkeypatch.setattr(sharded_decode.ShardedStepper, "__init__",
                        lambda self, *args, **kwargs: built.append(1) or original_init(self, *args, **kwargs))
    params = SamplingParams(max_new_tokens=6, do_sample=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sharded = _sample(CachedSampler(shard_merge_work=0), eos_model, tokenizer, params, seed=0)
            one_batch = _sample(CachedSampler(shard_rows=False), eos_model, tokenizer, params, seed=0)
        full = _sample(CachedSampler(shard_rows=False), eos_model, tokenizer, params, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert built == [1]
    assert torch.equal(sharded.response_ids, one_batch.response_ids)
    torch.testing.assert_close(sharded.logprobs, one_batch.logprobs, atol=0.05, rtol=0)
    for row in range(len(PROMPTS)):  # every row's log-probs moved by bf16 rounding, so no shard ran in float32
        assert not torch.equal(sharded.logprobs[row], full.logprobs[row]), row


def test_concatenated_caches_hold_the_rows_in_turn() -> None:
    from transformers import GPT2Config

    config = GPT2Config(n_layer=2, n_embd=8, n_head=2)
    parts = []
    for rows, fill in ((2, 1.0), (3, 2.0)):
        cache = preallocated_cache(type("M", (), {"config": config})(), rows, capacity=6)
        for layer in cache.layers:
            layer.update(torch.full((rows, 2, 4, 4), fill), torch.full((rows, 2, 4, 4), -fill))
        parts.append(cache)
    merged = concatenated(parts)
    for layer in merged.layers:
        assert layer.batch == 5 and layer.capacity == 6 and layer.get_seq_length() == 4
        assert layer.keys[:, 0, 0, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
        assert layer.values[:, 0, 0, 0].tolist() == [-1.0, -1.0, -2.0, -2.0, -2.0]
        layer.update(torch.zeros(5, 2, 1, 4), torch.zeros(5, 2, 1, 4))  # still appends in place
        assert layer.get_seq_length() == 5


def test_a_forked_child_gets_its_own_pool() -> None:
    parent = worker_pool(1)
    assert worker_pool(1) is parent
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's worker threads do not exist here
        try:
            result = worker_pool(1).submit(lambda: 7).result(timeout=10)
            os.write(writer, b"ok" if result == 7 and worker_pool(1) is not parent else b"no")
        finally:
            os._exit(0)
    os.close(writer)
    for _ in range(300):  # bounded: a child stuck in a lock the fork copied must not hang the suite
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish within 30 s")
    assert os.read(reader, 2) == b"ok"


def test_a_failing_shard_waits_for_the_others_before_raising(eos_model, tokenizer) -> None:
    """An error in the calling thread's shard surfaces only once the pool's shards have finished."""
    from rlhfkit.rl.cached_gpt2 import gpt2_parts

    mask = torch.ones(4, 8, dtype=torch.long)
    stepper = ShardedStepper(eos_model, *gpt2_parts(eos_model), mask, [2, 2], prompt_length=4)
    finished = []

    def slow() -> int:
        time.sleep(0.3)
        finished.append(True)
        return 1

    def fail() -> int:
        raise RuntimeError("shard 0 failed")

    with pytest.raises(RuntimeError, match="shard 0 failed"):
        stepper._run([fail, slow])
    assert finished == [True]
