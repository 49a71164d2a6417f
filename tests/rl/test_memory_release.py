"""Memory of an on-policy step: MKL's cached buffers released, gradients written into consumed logits,
reward models kept on disk between scorings; scores and training unchanged (``reward.offload``,
``run.release_memory``)."""

from __future__ import annotations

import gc

import pytest
import torch
from toy_problem import PROMPT, run_config_overrides, toy_bundle, toy_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from rlhfkit.config import load_config
from rlhfkit.models.reward_model import RewardModel, RewardModelSettings
from rlhfkit.rl.config import PPOConfig
from rlhfkit.rl.logprobs import fused_logprobs
from rlhfkit.rl.onpolicy import OnPolicyTrainer
from rlhfkit.rl import onpolicy_memory
from rlhfkit.rl.onpolicy_memory import offload_reward_models
from rlhfkit.rl.rewards import EnsembleReward, FunctionReward, ModelReward
from rlhfkit.rl.rollout import make_sampler
from rlhfkit.utils.memory import mkl_cached_bytes, release_cached_memory
from rlhfkit.utils.offload import DiskOffload, filesystem_type


def tiny_config() -> GPT2Config:
    return GPT2Config(vocab_size=5, n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)


def toy_reward_model(seed: int = 3) -> RewardModel:
    torch.manual_seed(seed)
    return RewardModel(GPT2Model(tiny_config()).eval(), toy_tokenizer(), RewardModelSettings(max_length=8)).eval()


def test_release_frees_mkl_buffers():
    if mkl_cached_bytes() is None:
        pytest.skip("torch without MKL's memory manager")
    torch.randn(256, 128) @ torch.randn(128, 512)
    assert mkl_cached_bytes() > 0
    release_cached_memory()
    assert mkl_cached_bytes() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_consumed_logits_give_the_same_gradient_in_their_own_memory(dtype):
    torch.manual_seed(0)
    leaf = torch.randn(70, 33, requires_grad=True)
    tokens = torch.randint(0, 33, (70,))
    grads, pointers = [], []
    for consume in (False, True):
        logits = (leaf * 1.5).to(dtype)  # a fresh non-leaf output, as a forward's logits are
        pointers.append(logits.data_ptr())
        logits.register_hook(lambda grad: pointers.append(grad.data_ptr()))
        logprobs, entropy = fused_logprobs(logits, tokens, 0.7, with_entropy=True, consume=consume)
        (logprobs.sum() + 0.3 * entropy.sum()).backward()
        grads.append(leaf.grad.clone())
        leaf.grad = None
    assert torch.equal(grads[0], grads[1])
    assert pointers[1] != pointers[0] and pointers[3] == pointers[2]  # consumed: the gradient fills the logits


def test_offloaded_module_is_empty_outside_and_identical_inside(tmp_path):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config()).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = model(ids).logits
    offload = DiskOffload(model, name="policy", directory=tmp_path)
    assert all(p.numel() == 0 for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    with offload.resident(), offload.resident(), torch.no_grad():
        assert model.lm_head.weight is model.transformer.wte.weight  # the tie survives
        assert torch.equal(model(ids).logits, expected)
    assert all(p.numel() == 0 for p in model.parameters())


def test_offload_refuses_weights_off_the_cpu():
    with pytest.raises(ValueError, match="weights on the CPU"):
        DiskOffload(torch.nn.Linear(2, 2, device="meta"), name="reward-0")


def test_offload_names_a_reward_model_that_is_no_module():
    class Scorer:
        def score_texts(self, prompts, responses, normalized=True):
            return [0.0] * len(prompts)

    reward = EnsembleReward([FunctionReward(lambda p, r: [0.0] * len(r), "f"), ModelReward(Scorer(), "my-scorer")])
    with pytest.raises(ValueError, match="my-scorer is a Scorer"):
        offload_reward_models(reward)
    assert offload_reward_models(reward, setting=None) == []  # auto offloads what it can and skips the rest


def test_auto_offload_skips_models_off_the_cpu(monkeypatch):
    monkeypatch.setattr(onpolicy_memory, "memory_backed", lambda: False)
    on_cpu, elsewhere = toy_reward_model(), toy_reward_model().to("meta")
    reward = EnsembleReward([ModelReward(elsewhere, "meta-rm"), ModelReward(on_cpu, "cpu-rm")])
    offloads = offload_reward_models(reward, setting=None)
    assert [offload.path.name for offload in offloads] == ["reward-1.pt"]
    assert offload_reward_models(reward, setting=False) == []


def test_restored_module_stays_whole(tmp_path):
    model = torch.nn.Linear(3, 2)
    weight = model.weight.detach().clone()
    offload = DiskOffload(model, name="m", directory=tmp_path)
    offload.restore()
    with offload.resident():
        pass
    assert torch.equal(model.weight, weight)


@pytest.mark.parametrize("path, expected", [("/", "ext4"), ("/tmp", "tmpfs"), ("/tmp/x/y", "tmpfs"),
                                            ("/tmpfoo", "ext4"), ("/mnt/my disk/run", "xfs"), ("/srv/a", "ext4")])
def test_filesystem_type_is_that_of_the_longest_mount_point(path, expected):
    mounts = ("/dev/vda / ext4 rw 0 0\n"
              "tmpfs /tmp tmpfs rw 0 0\n"
              "/dev/vdb /mnt/my\\040disk xfs rw 0 0\n"
              "/dev/vdc /srv/a xfs rw 0 0\n"
              "/dev/vdd /srv/a ext4 rw 0 0\n")  # mounted over: the last one wins
    assert filesystem_type(path, mounts) == expected


def test_filesystem_type_without_a_mount_point_is_unknown():
    assert filesystem_type("/data", "tmpfs /tmp tmpfs rw 0 0\n") is None


def ppo_run(tmp_path, offload: bool | None, release: bool = False
            ) -> tuple[OnPolicyTrainer, list[dict[str, float]], torch.Tensor, RewardModel]:
    model = toy_reward_model()
    reward = EnsembleReward([ModelReward(model, "toy-rm", normalized=False)])
    bundle = toy_bundle(value="head")
    setting = [] if offload is None else [f"reward.offload={str(offload).lower()}"]
    config = load_config(PPOConfig, None, run_config_overrides(tmp_path, 2) + [
        "num_prompts=4", "epochs=1", "num_minibatches=2", "optim.lr=1e-2", *setting,
        f"run.release_memory={str(release).lower()}", "run.row_halves=never"])  # release_memory turns them off
    trainer = OnPolicyTrainer(config, bundle, reward, [PROMPT], make_sampler("cached"))
    metrics = trainer.train()
    return trainer, metrics, torch.cat([p.detach().flatten() for p in bundle.policy.parameters()]), model


def test_low_memory_settings_score_and_train_exactly_as_without(tmp_path):
    _, resident_metrics, resident_policy, _ = ppo_run(tmp_path / "resident", offload=False)
    trainer, offload_metrics, offload_policy, model = ppo_run(tmp_path / "offload", offload=True, release=True)
    assert all(p.numel() == 0 for p in model.parameters())  # off the heap between scorings
    for before, after in zip(resident_metrics, offload_metrics):
        assert after["reward/raw_mean"] == before["reward/raw_mean"]
        assert after["loss/total"] == before["loss/total"]
    assert torch.equal(offload_policy, resident_policy)
    del trainer
    gc.collect()
    assert all(p.numel() > 0 for p in model.parameters())  # the trainer gone, the reward model is whole again


@pytest.mark.parametrize("in_memory, offloaded", [(False, True), (True, False), (None, False)])
def test_offload_by_default_only_where_the_temporary_directory_is_on_disk(tmp_path, monkeypatch, in_memory, offloaded):
    monkeypatch.setattr(onpolicy_memory, "memory_backed", lambda: in_memory)
    trainer, _, _, model = ppo_run(tmp_path, offload=None)
    assert bool(trainer.reward_offloads) == offloaded
    assert all((p.numel() == 0) == offloaded for p in model.parameters())


def test_offloaded_reward_models_score_on_their_mapped_weights_not_packed_copies(monkeypatch):
    """A packed copy of an offloaded model's weights would hold them in memory again while it scores (PPO with LoRA
    on a 12 x 768 GPT-2: 1,348 against 1,071 MiB), so offloaded members score unpacked until the trainer is gone."""
    from rlhfkit.rl import rewards as rewards_module

    class Owner:
        pass

    member = ModelReward(toy_reward_model(), "toy-rm", normalized=False)
    packs = []
    original = rewards_module.packed_linears_while
    monkeypatch.setattr(rewards_module, "packed_linears_while", lambda model, **kwargs: packs.append(1) or original(model, **kwargs))
    owner = Owner()
    offloads = offload_reward_models(EnsembleReward([member]), setting=True, owner=owner)
    assert len(offloads) == 1 and member.pack_weights is False
    with offloads[0].resident():
        member([PROMPT], ["a b"])
    assert packs == []
    del owner
    gc.collect()
    assert member.pack_weights is True
    member([PROMPT], ["a b"])
    assert packs == [1]
