"""One trained model's micro-batch as two row halves side by side: hooks bound to their thread, gradients added in
order, and the GRPO, PPO (value head) and DPO updates of the whole micro-batch."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers_models import tiny_tokenizer
from helpers_threads import count_side_by_side
from test_cached_llama import tiny_llama_family
from test_dpo import exact_pairs, overrides
from toy_problem import PROMPT, reward_table, run_config_overrides, table_reward, toy_bundle

import rlhfkit.rl.dpo as dpo
import rlhfkit.rl.onpolicy as onpolicy
import rlhfkit.rl.update as update
from rlhfkit.config import load_config
from rlhfkit.models.head_rows import lm_head_rows
from rlhfkit.models.loading import PolicyBundle
from rlhfkit.models.lora import LoraSettings, apply_lora
from rlhfkit.rl.config import DPOConfig, PolicyGradientConfig, PPOConfig
from rlhfkit.rl.dpo import DPOTrainer
from rlhfkit.rl.logprobs import token_logprobs
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl.rollout import make_sampler
from rlhfkit.rl.update import SeparateLosses, row_halves
from rlhfkit.utils.runtime import side_by_side, this_thread_only


@pytest.fixture()
def halves_counted(monkeypatch) -> list[int]:
    """How many rows each :func:`row_halves` call was given."""
    sizes: list[int] = []

    def counted(idx, part_loss, shared):
        sizes.append(len(idx))
        return row_halves(idx, part_loss, shared)

    monkeypatch.setattr(onpolicy, "row_halves", counted)
    monkeypatch.setattr(dpo, "row_halves", counted)
    return sizes


def test_a_thread_bound_hook_ignores_other_threads():
    calls: list[int] = []
    hook = this_thread_only(lambda value: calls.append(value) or value * 2)
    assert hook(3) == 6
    result: list[object] = []
    other = threading.Thread(target=lambda: result.append(hook(5)))
    other.start()
    other.join(timeout=10)
    assert result == [None] and calls == [3]


def test_one_model_runs_its_head_on_different_rows_in_two_threads_at_once(two_threads):
    """Each thread's output-head rows hook sees only its own forward: before, the second thread's hook on the shared
    head also cut the first thread's hidden states (a shape error, or wrong rows)."""
    model = toy_bundle().policy
    ids = torch.tensor([[1, 2, 3, 4, 0], [1, 2, 0, 3, 4], [1, 3, 3, 4, 2], [2, 2, 0, 1, 1]]) % model.config.vocab_size
    keep = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.bool)
    halves = (slice(0, 2), slice(2, 4))
    barrier = threading.Barrier(2, timeout=10)

    def logits(rows: slice, wait: bool) -> torch.Tensor:
        with torch.no_grad(), lm_head_rows(model, keep[rows]):
            if wait:
                barrier.wait()  # both hooks are registered before either forward runs
            return model(input_ids=ids[rows]).logits

    alone = [logits(rows, wait=False) for rows in halves]
    together = side_by_side([lambda: logits(halves[0], wait=True), lambda: logits(halves[1], wait=True)])
    assert [tuple(x.shape) for x in alone] == [(3, model.config.vocab_size), (6, model.config.vocab_size)]
    for a, b in zip(alone, together):
        assert torch.allclose(a, b, atol=1e-6)


def test_shared_parameters_receive_the_terms_gradients_added_in_order(two_threads):
    """Terms over the same parameters backward side by side: bit for bit the gradients of one backward after the
    other, onto gradients already accumulated (an earlier micro-batch)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    unused = torch.nn.Parameter(torch.ones(2))  # reached by no term: keeps no gradient
    params = (*model.parameters(), unused)
    x = torch.randn(3, 40, 6)

    def terms() -> list[torch.Tensor]:
        return [model(part).square().mean() for part in x]

    for term in terms():
        term.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    earlier, *rest = terms()
    earlier.backward()
    SeparateLosses(tuple(rest), params).backward()
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), expected))
    assert unused.grad is None


def test_two_terms_onto_fresh_gradients_add_straight_in_and_repeat_bit_for_bit(two_threads):
    """No gradient yet and two terms: both backward passes add straight into the shared gradients, in whichever order
    they finish, and a + b == b + a in floats: every repeat equals one backward after the other, bit for bit."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 64))
    x = torch.randn(2, 512, 64)

    def terms() -> list[torch.Tensor]:
        return [model(part).square().mean() for part in x]

    for term in terms():
        term.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    for _ in range(10):
        model.zero_grad(set_to_none=True)
        SeparateLosses(tuple(terms()), tuple(model.parameters())).backward()
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), expected))


def test_row_halves_split_the_sorted_rows_and_sum_their_stats(two_threads):
    seen: list[list[int]] = []
    weight = torch.nn.Parameter(torch.tensor(2.0))

    def part_loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        seen.append(rows.tolist())
        return weight * len(rows), {"rows": float(len(rows))}

    losses, stats = row_halves(torch.tensor([5, 1, 4, 0, 3]), part_loss, [weight])
    assert sorted(seen) == [[0, 1, 3], [4, 5]] and stats == {"rows": 5.0}
    assert losses.item() == 10.0
    losses.backward()
    assert weight.grad.item() == 5.0


def on_policy_update(tmp_path, config_class, algo: list[str], halves: bool) -> tuple[list[torch.Tensor], dict]:
    bundle = toy_bundle(value="head" if config_class is PPOConfig else None)
    config = load_config(config_class, None, run_config_overrides(tmp_path / str(halves), 1) + algo + [
        "optim.lr=1.0", "optim.eps=1.0", "optim.max_grad_norm=null",
        f"run.row_halves={'auto' if halves else 'never'}"])
    trainer = OnPolicyTrainer(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached"))
    metrics = trainer.train_step()
    return [p.detach().clone() for p in bundle.trainable_parameters()], metrics


@pytest.mark.parametrize("config_class,algo", [
    (PolicyGradientConfig, ["algo=grpo", "recipe=grpo-paper", "num_prompts=4", "group_size=4", "kl.coef=0.1"]),
    (PPOConfig, ["num_prompts=8", "value_model=head", "epochs=2", "num_minibatches=2", "approx_kl_stop=null"])])
def test_on_policy_update_in_row_halves_is_that_of_whole_micro_batches(tmp_path, two_threads, halves_counted,
                                                                       config_class, algo):
    """GRPO (one model) and PPO with a value head (one trunk): the same parameters and stats after a step whether
    each micro-batch runs whole or as two halves side by side (Adam with eps=1: an update ~ lr * gradient)."""
    halved, halved_metrics = on_policy_update(tmp_path, config_class, algo, halves=True)
    rows = list(halves_counted)
    whole, whole_metrics = on_policy_update(tmp_path, config_class, algo, halves=False)
    assert rows == ([16] if config_class is PolicyGradientConfig else [4] * 4) and halves_counted == rows
    initial = toy_bundle(value="head" if config_class is PPOConfig else None).trainable_parameters()
    moved = max(float((a - b.detach()).abs().max()) for a, b in zip(halved, initial))
    assert moved > 1e-3
    for a, b in zip(halved, whole):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), float((a - b).abs().max())
    for key in ("loss/total", "loss/policy", "policy/entropy", "policy/approx_kl", "policy/clipfrac"):
        assert halved_metrics[key] == pytest.approx(whole_metrics[key], rel=1e-5, abs=1e-6), key


def test_dpo_update_in_row_halves_is_that_of_whole_micro_batches(tmp_path, two_threads, halves_counted):
    _, _, pairs = exact_pairs()
    results = []
    for halves in (True, False):
        bundle = toy_bundle()
        config = load_config(DPOConfig, None, overrides(tmp_path / str(halves), "optim.lr=1.0", "optim.eps=1.0",
                                                        "run.steps=2", "batch_size=24", "optim.grad_accum=2",
                                                        "optim.max_grad_norm=null",
                                                        f"run.row_halves={'auto' if halves else 'never'}"))
        history = DPOTrainer(config, bundle, pairs).train()
        results.append(([p.detach().clone() for p in bundle.trainable_parameters()], history[-1]))
    assert halves_counted == [12] * 4  # 2 steps x 2 micro-batches, only with halves on
    (halved, halved_metrics), (whole, whole_metrics) = results
    for a, b in zip(halved, whole):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), float((a - b).abs().max())
    for key in ("loss/dpo", "rewards/margin", "rewards/accuracy", "logps/chosen"):
        assert halved_metrics[key] == pytest.approx(whole_metrics[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("setting", ["run.release_memory=true", "run.row_halves=never", "one_thread"])
def test_row_halves_stay_off_for_low_memory_one_thread_or_when_asked(tmp_path, two_threads, halves_counted, setting):
    if setting == "one_thread":
        torch.set_num_threads(1)
    extra = [] if setting == "one_thread" else [setting]
    config = load_config(PolicyGradientConfig, None, run_config_overrides(tmp_path, 1) + [
        "algo=grpo", "recipe=grpo-paper", "num_prompts=4", "group_size=4", *extra])
    OnPolicyTrainer(config, toy_bundle(), table_reward(reward_table()), [PROMPT], make_sampler("cached")).train_step()
    assert halves_counted == []


def test_a_separate_critic_beside_the_policy_is_not_halved(tmp_path, two_threads, halves_counted, monkeypatch):
    calls = count_side_by_side(monkeypatch, update)
    config = load_config(PPOConfig, None, run_config_overrides(tmp_path, 1) + [
        "num_prompts=8", "value_model=critic", "epochs=1", "num_minibatches=2"])
    OnPolicyTrainer(config, toy_bundle(value="critic"), table_reward(reward_table()), [PROMPT],
                    make_sampler("cached")).train_step()
    assert halves_counted == [] and calls == [2, 2]  # the policy's and the critic's backward passes, per mini-batch


def test_dpo_reference_pass_in_two_halves_of_its_batches_matches_one_pass(tmp_path, two_threads, monkeypatch):
    _, _, pairs = exact_pairs()
    calls = count_side_by_side(monkeypatch, dpo)
    references = []
    for halves in (True, False):
        config = load_config(DPOConfig, None, overrides(tmp_path / str(halves), "batch_size=32",
                                                        f"run.row_halves={'auto' if halves else 'never'}"))
        trainer = DPOTrainer(config, toy_bundle(), pairs)
        trainer.precompute_reference()
        references.append((trainer.reference.chosen, trainer.reference.rejected))
    assert calls == [2]  # 210 pairs: 7 batches, 3 in one thread and 4 in the other; none without halves
    (chosen, rejected), (chosen_one, rejected_one) = references
    assert chosen.shape == rejected.shape == (len(pairs),)
    assert torch.allclose(chosen, chosen_one, atol=1e-5) and torch.allclose(rejected, rejected_one, atol=1e-5)
    assert not torch.equal(chosen, rejected)


def test_dpo_with_live_dropout_is_not_halved(tmp_path, two_threads, halves_counted):
    """Two threads drawing dropout from the one generator would draw in either order: such a run would not repeat."""
    _, _, pairs = exact_pairs()
    bundle = toy_bundle()
    bundle.policy.train()
    bundle.policy.config.attn_pdrop = 0.1
    config = load_config(DPOConfig, None, overrides(tmp_path, "run.steps=1", "batch_size=24"))
    DPOTrainer(config, bundle, pairs).train()
    assert halves_counted == []
    bundle.policy.config.attn_pdrop = 0.0  # train mode alone draws nothing
    DPOTrainer(load_config(DPOConfig, None, overrides(tmp_path / "b", "run.steps=1", "batch_size=24")), bundle,
               pairs).train()
    assert halves_counted == [24]


@pytest.mark.parametrize("setting,halved", [("auto", False), ("always", True)])
def test_adapters_train_whole_micro_batches_unless_asked(tmp_path, two_threads, halves_counted, setting, halved):
    """With LoRA the second thread's own heap raised PPO's peak memory by 10-20% for ~6% speed: ``auto`` keeps whole
    micro-batches there; ``always`` halves them anyway."""
    policy = apply_lora(toy_bundle().policy, LoraSettings(r=2, alpha=4.0, dropout=0.0))
    bundle = PolicyBundle(policy=policy, tokenizer=toy_bundle().tokenizer)
    config = load_config(PolicyGradientConfig, None, run_config_overrides(tmp_path, 1) + [
        "algo=grpo", "recipe=grpo-paper", "num_prompts=4", "group_size=4", f"run.row_halves={setting}"])
    OnPolicyTrainer(config, bundle, table_reward(reward_table()), [PROMPT], make_sampler("cached")).train_step()
    assert halves_counted == ([16] if halved else [])


@pytest.mark.parametrize("config_class", ["LlamaConfig", "Qwen3Config"])
def test_llama_family_gradients_in_row_halves_are_those_of_the_whole_batch(two_threads, config_class):
    """Grouped-query attention, rotary positions, RMS norms (and Qwen3's query/key norms) forward and backward in two
    threads at once on one model: the gradient of the whole batch, left padding and a shared prompt included."""
    model = tiny_llama_family(config_class, tiny_tokenizer())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (8, 12), generator=generator)
    ids[:4, :5] = ids[0, :5]  # four rows share their prompt
    mask = torch.ones_like(ids)
    mask[5, :2] = 0  # left padding
    mask[6, 9:] = 0  # a response that ended early
    params = [p for p in model.parameters() if p.requires_grad]

    def part_loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return token_logprobs(model, ids[rows], mask[rows], 5).sum(), {}

    part_loss(torch.arange(8))[0].backward()
    whole = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    losses, _ = row_halves(torch.arange(8), part_loss, params)
    losses.backward()
    for p, expected in zip(params, whole):
        torch.testing.assert_close(p.grad, expected, atol=1e-5, rtol=1e-4)
