"""Rollout backend timing: HF generate vs our samplers on a randomly initialised GPT-2.

Run: OMP_WAIT_POLICY=PASSIVE python bench/rollout.py --threads 2
Samplers: the names of ``SAMPLERS`` plus ``compiled:eager`` / ``compiled:compile`` (the compiled
backend with compilation forced off / on) and ``cached:plain`` (``cached`` without its speed-ups), ``cached:threaded`` (``cached`` decoding small batches on all threads), ``cached:unpacked`` (``cached`` with MKL's products instead of packed oneDNN weights), ``cached:unsharded`` (``cached`` decoding all rows as one batch instead of a shard of rows per thread), ``cached:unscripted`` (``cached`` with the eager GPT-2 decode step instead of the TorchScript one), ``cached:generic``
(``cached`` with transformers' forward instead of the hand-written GPT-2 or Llama-family step); a ``@bf16`` suffix runs that sampler under bfloat16
autocast, as the trainers sample with ``run.dtype=bfloat16`` (``hf@bf16`` is HF generate in the same
precision; the summary gives bf16 samplers' ratio over it as ``warm_cpu_same_dtype``). Each
sampler's first call, on the full batch, is its warm-up (``warmup_s``: that call minus the warm
median; compilation happens there). Prints one JSON line per (sampler, scenario) with seconds
(median of --repeats, order alternated per repeat), process CPU seconds (median), tokens/s and the
process's peak RSS so far, then one summary line per scenario with each sampler's speed-up over HF
generate (float32): warm (median vs median, wall and CPU) and ``cold`` (first call vs first call,
the warm-up counted once: what a process that samples once sees; the warm-up call uses the
"sample" scenario).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import rlhfkit  # noqa: E402, F401  (its process settings, e.g. MKL's allocator off, take effect when torch loads)

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

from rl_workload import LLAMA_FAMILY, llama_family_config  # noqa: E402
from rlhfkit.rl.compiled_sampler import CompiledSampler  # noqa: E402
from rlhfkit.rl.rollout import CachedSampler, Sampler, SamplingParams, make_sampler  # noqa: E402

WORDS = ("the movie was great and the actors were wonderful but the food was bad and the service slow "
         "what a lovely day the sun is bright please explain why the sky is blue in one short sentence").split()


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on a small corpus, topped up with filler tokens to exactly ``vocab_size``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 600), special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 20, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>", padding_side="left")
    hf.add_tokens([f"<filler{i}>" for i in range(vocab_size - len(hf))])
    return hf


def sampler_named(name: str) -> Sampler:
    """A registered sampler, the compiled backend with compilation forced (``compiled:eager|compile``), or
    ``cached:plain``: the cached sampler with its speed-ups off (left-padded prefill, transformers' cache and
    forward, transformers' GELU), to measure what they buy."""
    name = name.split("@", 1)[0]
    if name == "cached:plain":
        return CachedSampler(inplace_kv=False, group_prefill=False, fuse_gelu=False, gpt2_step=False,
                             serial_step_work=0, pack_weights=False, name=name)
    if name == "cached:generic":
        return CachedSampler(gpt2_step=False, llama_step=False, name=name)
    if name == "cached:threaded":
        return CachedSampler(serial_step_work=0, name=name)
    if name == "cached:unpacked":
        return CachedSampler(pack_weights=False, name=name)
    if name == "cached:unsharded":
        return CachedSampler(shard_rows=False, name=name)
    if name == "cached:unscripted":
        return CachedSampler(scripted_step=False, name=name)
    if name.startswith("compiled:"):
        mode = name.split(":", 1)[1]
        if mode not in ("eager", "compile"):
            raise ValueError(f"unknown compiled mode {mode!r} in {name!r}; use compiled:eager or compiled:compile")
        return CompiledSampler(compile=mode == "compile", name=name)
    return make_sampler(name)


def precision(name: str, device: str) -> contextlib.AbstractContextManager[None]:
    """The sampler spec's precision: bfloat16 autocast for ``name@bf16``, float32 for a plain name."""
    suffix = name.split("@", 1)[1] if "@" in name else "fp32"
    if suffix not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {suffix!r} in {name!r}; use @bf16 or no suffix")
    if suffix == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(sampler: Sampler, model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
          params: SamplingParams, seed: int, cuda: bool,
          dtype: contextlib.AbstractContextManager[None]) -> tuple[float, float, int]:
    """Wall and CPU seconds of one ``sample`` call (synchronised on CUDA) and its number of response tokens.

    This process's CPU time is the steadier figure on a shared, oversubscribed CPU box (it excludes
    time spent waiting for a core; inductor's compile workers are other processes and not in it).
    """
    if cuda:
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    with dtype:
        rollout = sampler.sample(model, tokenizer, prompts, params, generator=torch.Generator().manual_seed(seed))
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start, int(rollout.response_mask.sum())


def workload(batch: int = 64, new_tokens: int = 32, vocab: int = 4096, embd: int = 256, layers: int = 4,
             device: str = "cpu", arch: str = "gpt2"
             ) -> tuple[torch.nn.Module, PreTrainedTokenizerFast, list[str], dict[str, SamplingParams]]:
    """The bench's random model (GPT-2, or ``arch`` of bench/rl_workload.py's ``LLAMA_FAMILY``), tokenizer, prompts of 4-23 words
    (varied token lengths) and scenarios."""
    tokenizer = build_tokenizer(vocab)
    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    heads = max(1, embd // 64)
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=256, n_embd=embd, n_layer=layers, n_head=heads, **ids))
    elif arch in LLAMA_FAMILY:
        import transformers

        model = transformers.AutoModelForCausalLM.from_config(llama_family_config(arch, embd, layers, heads, **ids))
    else:
        raise ValueError(f"unknown --arch {arch!r}; choose gpt2 or one of {sorted(LLAMA_FAMILY)}")
    model = model.to(device).eval()
    rng = torch.Generator().manual_seed(0)
    prompts = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(n),), generator=rng))
               for n in torch.randint(4, 24, (batch,), generator=rng)]
    scenarios = {
        "sample": SamplingParams(max_new_tokens=new_tokens, min_new_tokens=new_tokens, temperature=1.0),
        "greedy": SamplingParams(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False),
        # EOS made likely (see boost_eos): responses end at varied lengths (what compaction of finished rows is for).
        "sample-varied-length": SamplingParams(max_new_tokens=new_tokens, temperature=1.0),
    }
    return model, tokenizer, prompts, scenarios


def boost_eos(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, boost: float) -> None:
    """Shift the final layer norm's bias so that EOS's logit rises by ``boost`` at every position (in place); a
    Llama-family model, whose RMS norm has no bias, gets an LM head with a bias of ``boost`` on EOS instead."""
    if not isinstance(model, GPT2LMHeadModel):
        head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True,
                               device=model.lm_head.weight.device)
        with torch.no_grad():
            head.weight.copy_(model.lm_head.weight)
            head.bias.zero_()
            head.bias[tokenizer.eos_token_id] = boost
        model.lm_head = head
        return
    with torch.no_grad():
        direction = model.transformer.wte.weight[tokenizer.eos_token_id]
        model.transformer.ln_f.bias.add_(boost * direction / direction.norm().pow(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--embd", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--arch", default="gpt2", help=f"gpt2 or one of {sorted(LLAMA_FAMILY)} (see workload)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samplers", default="hf,cached,cached-static,compiled,compiled:compile,hf@bf16,cached@bf16,"
                                               "compiled@bf16")
    parser.add_argument("--eos-boost", type=float, default=6.0, help="EOS logit shift for the varied-length scenario.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, prompts, scenarios = workload(args.batch, args.new_tokens, args.vocab, args.embd, args.layers,
                                                    args.device, args.arch)
    samplers = {name: sampler_named(name) for name in args.samplers.split(",")}
    if "hf" not in samplers:
        raise ValueError("--samplers must include hf, the reference of the ratios")
    cuda = args.device.startswith("cuda")
    first: dict[str, float] = {}
    for name, sampler in samplers.items():  # warm-up on the full batch: the shapes every scenario uses
        first[name], _, _ = timed(sampler, model, tokenizer, prompts, scenarios["sample"], 0, cuda,
                                  precision(name, args.device))
    for scenario, params in scenarios.items():
        if scenario == "sample-varied-length":
            boost_eos(model, tokenizer, args.eos_boost)
        times: dict[str, list[float]] = {name: [] for name in samplers}
        cpu_times: dict[str, list[float]] = {name: [] for name in samplers}
        tokens: dict[str, int] = {}
        for repeat in range(args.repeats):  # interleaved, order alternated: load changes on a shared box hit all
            order = list(samplers) if repeat % 2 == 0 else list(reversed(samplers))
            for name in order:
                seconds, cpu_seconds, tokens[name] = timed(samplers[name], model, tokenizer, prompts, params, repeat,
                                                           cuda, precision(name, args.device))
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
        medians = {name: statistics.median(times[name]) for name in samplers}
        cpu_medians = {name: statistics.median(cpu_times[name]) for name in samplers}
        for name in samplers:
            seconds = medians[name]
            print(json.dumps({"bench": "rollout", "sampler": name, "scenario": scenario, "device": args.device,
                              "threads": args.threads, "batch": args.batch, "new_tokens": args.new_tokens,
                              "vocab": len(tokenizer), "arch": args.arch, "n_embd": args.embd, "layers": args.layers,
                              "seconds": round(seconds, 4), "cpu_s": round(cpu_medians[name], 4),
                              "warmup_s": round(max(first[name] - medians[name], 0.0), 3),
                              "response_tokens": tokens[name], "tokens_per_s": round(tokens[name] / seconds, 1),
                              "all_s": [round(t, 4) for t in times[name]], "peak_rss_mb": round(peak_rss_mb(), 1),
                              "loadavg": os.getloadavg()[0]}), flush=True)
        hf = medians["hf"]
        summary = {name: {"warm": round(hf / medians[name], 2),
                          "warm_cpu": round(cpu_medians["hf"] / cpu_medians[name], 2),
                          "cold": round(first["hf"] / first[name], 2)}
                   for name in samplers if name != "hf"}
        if "hf@bf16" in samplers:
            for name in samplers:
                if name.endswith("@bf16") and name != "hf@bf16":
                    summary[name]["warm_cpu_same_dtype"] = round(cpu_medians["hf@bf16"] / cpu_medians[name], 2)
        print(json.dumps({"bench": "rollout-summary", "scenario": scenario, "device": args.device,
                          "speedup_vs_hf": summary, "loadavg": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
