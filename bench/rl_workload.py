"""The fixed models and data of the policy-optimization benchmarks (bench/ppo.py, grpo.py, dpo.py).

Policy: GPT-2 built from config (vocab 4096, n_positions 256, n_embd 256, n_layer 4, n_head 4,
float32), or a Llama or Qwen3 of about its size (``RLHFKIT_BENCH_POLICY``, see ``POLICY_ARCH``); reward model: the same trunk with a scalar head; critic (PPO): the same trunk with a
value head. A word-level tokenizer over ``w2 .. w4095`` makes every prompt exactly 16 tokens and
every decoded response re-encode to the same tokens for the reward model.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import rlhfkit  # noqa: E402, F401  (its process settings, e.g. MKL's allocator off, take effect when torch loads)
import resource  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast  # noqa: E402

from rlhfkit.models.loading import PolicyBundle, make_frozen_reference  # noqa: E402
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings  # noqa: E402
from rlhfkit.models.value import CriticModel  # noqa: E402
from rlhfkit.rl.rewards import EnsembleReward, ModelReward  # noqa: E402
from rlhfkit.models.gelu import fuse_gelu  # noqa: E402

VOCAB, POSITIONS, EMBD, LAYERS, HEADS = 4096, 256, 256, 4, 4
#: The policy's (and so the reference's) architecture: ``gpt2`` (default) or a Llama-family config of about the
#: same size (``llama``, ``qwen3``: grouped-query attention with 2 key/value heads, a SwiGLU MLP of width 688);
#: the critic and the reward model stay GPT-2. Set by ``RLHFKIT_BENCH_POLICY`` (read by every bench subprocess).
POLICY_ARCH = os.environ.get("RLHFKIT_BENCH_POLICY", "gpt2")
LLAMA_FAMILY = {"llama": "LlamaConfig", "qwen3": "Qwen3Config"}
PAD_ID, EOS_ID = 0, 1
PROMPT_TOKENS, NEW_TOKENS = 16, 32


def tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: <pad>=0, <eos>=1 (also BOS), words w2..w4095."""
    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, **{f"w{i}": i for i in range(2, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<eos>", pad_token="<pad>",
                                   padding_side="left")


def gpt2_config() -> GPT2Config:
    """The benchmark architecture."""
    return GPT2Config(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=EMBD, n_layer=LAYERS, n_head=HEADS,
                      bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)


def policy_model() -> torch.nn.Module:
    """A fresh policy of ``POLICY_ARCH`` (the caller seeds torch)."""
    if POLICY_ARCH == "gpt2":
        return GPT2LMHeadModel(gpt2_config())
    if POLICY_ARCH not in LLAMA_FAMILY:
        raise ValueError(f"RLHFKIT_BENCH_POLICY={POLICY_ARCH!r}: use gpt2 or one of {sorted(LLAMA_FAMILY)}")
    import transformers

    config = llama_family_config(POLICY_ARCH, EMBD, LAYERS, HEADS, vocab_size=VOCAB, bos_token_id=EOS_ID,
                                 eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return transformers.AutoModelForCausalLM.from_config(config)


def llama_family_config(arch: str, embd: int, layers: int, heads: int, **ids: Any) -> Any:
    """A config of ``LLAMA_FAMILY[arch]`` with about a GPT-2's parameters at this width and depth: half as many
    key/value heads as query heads, a SwiGLU MLP of 8/3 x the width (three products of the GPT-2's two of 4 x),
    256 positions, tied embeddings; ``ids``: vocabulary size and special-token ids."""
    import transformers

    return getattr(transformers, LLAMA_FAMILY[arch])(
        hidden_size=embd, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        head_dim=embd // heads, intermediate_size=(embd * 8 // 3 + 15) // 16 * 16, max_position_embeddings=POSITIONS,
        tie_word_embeddings=True, **ids)


def bundle(critic: bool, seed: int = 0) -> PolicyBundle:
    """Policy (eval mode: dropout off, as the trainers run it), frozen reference copy, optional critic."""
    torch.manual_seed(seed)
    policy = policy_model().eval()
    value = CriticModel(GPT2Model(gpt2_config()).eval()) if critic else None
    return PolicyBundle(policy=policy, tokenizer=tokenizer(), value_model=value,
                        frozen_reference=make_frozen_reference(policy))


def reward(seed: int = 1, fused_gelu: bool = True) -> EnsembleReward:
    """The reward model: same trunk, scalar head, scored from text as in a real run (and, as
    ``rlhfkit.rl.rewards.build_reward`` does for loaded models, with the fused GELU)."""
    torch.manual_seed(seed)
    model = RewardModel(GPT2Model(gpt2_config()).eval(), tokenizer(), RewardModelSettings(max_length=POSITIONS)).eval()
    if fused_gelu:
        fuse_gelu(model)
    return EnsembleReward([ModelReward(model, "bench-rm", normalized=False)])


def prompts(count: int, seed: int = 0) -> list[str]:
    """``count`` prompts of exactly 16 word tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (count, PROMPT_TOKENS), generator=generator)
    return [" ".join(f"w{i}" for i in row.tolist()) for row in ids]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews wall times)."""
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def run_overrides(output_dir: str, steps: int) -> list[str]:
    """Run settings shared by the on-policy benchmarks: fixed lengths, no checkpoints, no progress."""
    return [f"run.output_dir={output_dir}", f"run.steps={steps}", "run.progress=false", "run.save_every=0",
            f"generation.max_new_tokens={NEW_TOKENS}", f"generation.min_new_tokens={NEW_TOKENS}",
            "reward.invalid_score=null", "reward.penalize_empty=false", "optim.lr=1e-5"]


def summarize_phases(totals: dict[str, float], steps: int) -> dict[str, Any]:
    """Seconds per step of each timed phase."""
    return {name.removeprefix("time/"): round(value / steps, 4) for name, value in sorted(totals.items())}
