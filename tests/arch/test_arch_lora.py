"""LoRA on every architecture: target modules found without naming them, and after PPO steps the
reference (adapters off) is still exactly the base model while the policy has moved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from arch_data import prompts_file
from arch_zoo import ARCHITECTURES

from rlhfkit.config import load_config
from rlhfkit.models.loading import load_causal_lm, load_policy_bundle
from rlhfkit.models.lora import LoraSettings
from rlhfkit.rl.config import PPOConfig
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl.prompts import read_prompts
from rlhfkit.rl.rewards import build_reward
from rlhfkit.rl.rollout import make_sampler

pytestmark = pytest.mark.arch

SEPARATE_QV = {"q_proj", "v_proj"}
EXPECTED_TARGETS = {"gpt2": {"c_attn"}, "llama": SEPARATE_QV, "qwen2": SEPARATE_QV, "mistral": SEPARATE_QV,
                    "gemma": SEPARATE_QV, "gemma2": SEPARATE_QV, "phi3": {"qkv_proj"}, "gpt_neox": {"query_key_value"},
                    "opt": SEPARATE_QV, "qwen3": SEPARATE_QV, "qwen3_moe": SEPARATE_QV, "gemma3": SEPARATE_QV,
                    "olmo2": SEPARATE_QV, "smollm3": SEPARATE_QV, "gpt_oss": SEPARATE_QV,
                    # hybrids: the convolution / linear-attention layers' input projection too (no attention there)
                    "lfm2": SEPARATE_QV | {"in_proj"}, "qwen3_next": SEPARATE_QV | {"in_proj_qkvz"},
                    "qwen3_5": SEPARATE_QV | {"in_proj_qkv"},
                    "falcon_h1": SEPARATE_QV}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_targets_are_detected_and_the_reference_stays_the_base(zoo, arch, tmp_path: Path) -> None:
    path = zoo[arch].policy
    bundle = load_policy_bundle(path, lora=LoraSettings(r=2, alpha=4, dropout=0.0), value="head", device="cpu",
                                dtype=torch.float32)
    base = load_causal_lm(path, device="cpu", dtype=torch.float32)
    assert set(bundle.policy.peft_config["default"].target_modules) == EXPECTED_TARGETS[arch]
    adapted = {name.rsplit(".", 1)[-1] for name, module in bundle.policy.named_modules() if hasattr(module, "lora_A")}
    assert adapted == EXPECTED_TARGETS[arch]
    config = load_config(PPOConfig, None, ["run.steps=2", "run.save_every=0", "run.progress=false", "optim.lr=5e-2",
                                           f"run.output_dir={tmp_path}", "generation.max_new_tokens=4",
                                           "num_prompts=3", "epochs=1", "num_minibatches=1"])
    reward = build_reward([str(zoo.reward_model(arch))], device="cpu")
    OnPolicyTrainer(config, bundle, reward, read_prompts(prompts_file(tmp_path)), make_sampler("cached")).train()
    batch = dict(bundle.tokenizer(["Why is the sky blue?", "Hi"], return_tensors="pt", padding=True))
    with torch.no_grad():
        base_logits = base(**batch).logits
        with bundle.reference() as reference:
            torch.testing.assert_close(reference(**batch).logits, base_logits, atol=1e-5, rtol=0)  # GPT-2: fused GELU
        assert (bundle.policy(**batch).logits - base_logits).abs().max() > 1e-4
