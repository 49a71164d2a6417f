"""bench/rl_workload.py's policy architecture switch, read by every trainer benchmark and bench/vs_trl.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_trainer_benches_build_a_llama_family_policy_on_request(monkeypatch) -> None:
    """``RLHFKIT_BENCH_POLICY``: the policy (and reference) of bench/rl_workload.py is a Qwen3 of about the GPT-2's
    size, and the floor decodes it with Llama-family blocks: its samples' log-probs match the model's forward."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import rl_workload as wl
    import trainer_bench

    monkeypatch.setattr(wl, "POLICY_ARCH", "qwen3")
    policy = wl.policy_model()
    assert type(policy).__name__ == "Qwen3ForCausalLM"
    gpt2 = sum(p.numel() for p in wl.GPT2LMHeadModel(wl.gpt2_config()).parameters())
    assert 0.9 < sum(p.numel() for p in policy.parameters()) / gpt2 < 1.3
    fields = trainer_bench.onpolicy_floor(1.0, 1.0, 2, 2, 1, critic=False, repeats=1)
    assert fields["floor_s"] > 0 and fields["floor_sampler_logprob_error"] < 1e-4
    monkeypatch.setattr(wl, "POLICY_ARCH", "mamba")
    with pytest.raises(ValueError, match="RLHFKIT_BENCH_POLICY"):
        wl.policy_model()


@pytest.mark.parametrize("arch", ["gpt2", "qwen3"])
def test_the_on_policy_floor_runs_in_bf16_on_request(monkeypatch, arch) -> None:
    """``--dtype bfloat16`` of bench/grpo.py and ppo.py: the floor decodes with a bf16 cache (Qwen3's rotary keys
    come out of autocast in float32) and its samples' log-probs match the model's bf16 forward within bf16
    rounding, not float32's 1e-4; the critic trains too."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import rl_workload as wl
    import trainer_bench

    monkeypatch.setattr(wl, "POLICY_ARCH", arch)
    fields = trainer_bench.onpolicy_floor(1.0, 1.0, 2, 2, 2, critic=arch == "gpt2", repeats=1, dtype="bfloat16")
    assert fields["floor_s"] > 0 and fields["floor_sampler_logprob_error"] < 0.2
