"""Reward sources: functions by spec, ensembles, reward-model wrapper, non-finite handling."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from rlhfkit.rl.rewards import (
    EnsembleReward,
    FunctionReward,
    ModelReward,
    RewardError,
    build_reward,
    check_scores,
    describe,
    load_function,
    mixture_mean_std,
)


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


class FakeRewardModel:
    """Stands in for rlhfkit's RewardModel: offset scores, normalised by stored stats on request."""

    def __init__(self, offset: float):
        self.offset = offset
        self.calls = []

    def score_texts(self, prompts, responses, normalized=False):
        self.calls.append((len(prompts), normalized))
        raw = torch.tensor([len(r) + self.offset for r in responses])
        return (raw - 2.0) / 4.0 if normalized else raw


def test_load_function_by_module_and_by_file(tmp_path):
    fn = load_function(f"{__name__}:length_reward")
    assert fn(["p"], ["abc"]) == [3.0]
    file = tmp_path / "my_reward.py"
    file.write_text("def score(prompts, responses):\n    return [1.0 for _ in responses]\n")
    assert load_function(f"{file}:score")(["a"], ["b"]) == [1.0]


def test_load_function_finds_a_package_in_the_working_directory(tmp_path, monkeypatch):
    # the README recipe `rlhfkit grpo --reward-fn mypkg.rewards:score`, run from the directory holding mypkg/
    package = tmp_path / "qa_reward_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rewards.py").write_text("def score(prompts, responses):\n    return [2.0 for _ in responses]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "qa_reward_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "qa_reward_pkg.rewards", raising=False)
    assert load_function("qa_reward_pkg.rewards:score")(["p"], ["r"]) == [2.0]
    assert str(tmp_path) in sys.path
    sys.modules.pop("qa_reward_pkg.rewards", None)
    sys.modules.pop("qa_reward_pkg", None)


def test_load_function_keeps_the_error_of_a_missing_dependency(tmp_path, monkeypatch):
    (tmp_path / "qa_broken_reward.py").write_text("import qa_dependency_that_is_absent\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(RewardError, match="qa_dependency_that_is_absent"):
        load_function("qa_broken_reward:score")
    sys.modules.pop("qa_broken_reward", None)


@pytest.mark.parametrize("spec,match", [
    ("no_colon", "module:function"),
    ("not_a_module_xyz:f", "cannot import"),
    (f"{__name__}:missing_fn", "no callable named 'missing_fn'"),
    ("/nonexistent/file.py:f", "does not exist"),
])
def test_load_function_errors_name_the_spec(spec, match):
    with pytest.raises(RewardError, match=match):
        load_function(spec)


def test_function_reward_checks_length_and_type():
    bad_len = FunctionReward(lambda p, r: [1.0], "short")
    with pytest.raises(RewardError, match="returned 1 scores for 2 responses"):
        bad_len(["a", "b"], ["x", "y"])
    bad_type = FunctionReward(lambda p, r: ["x", "y"], "strings")
    with pytest.raises(RewardError, match="strings"):
        bad_type(["a", "b"], ["x", "y"])


def test_model_reward_batches_and_normalises():
    model = FakeRewardModel(offset=0.0)
    source = ModelReward(model, "fake", normalized=True, batch_size=2)
    out = source(["p"] * 5, ["a", "bb", "ccc", "dddd", "eeeee"])
    assert out.tolist() == pytest.approx([(n - 2) / 4 for n in range(1, 6)])
    assert model.calls == [(2, True), (2, True), (1, True)]


def test_ensemble_mean_std_and_penalty():
    members = [ModelReward(FakeRewardModel(0.0), "a", normalized=False),
               ModelReward(FakeRewardModel(2.0), "b", normalized=False)]
    ens = EnsembleReward(members, uncertainty_coef=0.5)
    out = ens.score(["p", "p"], ["x", "xyz"])
    assert out.std.tolist() == pytest.approx([1.0, 1.0])
    assert out.scores.tolist() == pytest.approx([2.0 - 0.5, 4.0 - 0.5])
    assert "a" in ens.name and "b" in ens.name


class FakeHeadsModel:
    """A k-head reward model whose heads score every response with fixed values (raw) or halved (normalized)."""

    def __init__(self, heads):
        self.heads = heads

    def score_texts(self, prompts, responses, normalized=False, per_head=False):
        rows = torch.tensor([self.heads] * len(responses))
        rows = rows / 2.0 if normalized else rows
        return rows if per_head else rows.mean(-1)


def test_one_multi_head_model_is_an_ensemble_of_its_heads():
    # heads 0, 1, 5: mean 2, population variance (4 + 1 + 9) / 3 = 14/3
    reward = EnsembleReward([ModelReward(FakeHeadsModel([0.0, 1.0, 5.0]), "rm", normalized=False)],
                            uncertainty_coef=0.5)
    out = reward.score(["p", "q"], ["x", "y"])
    assert out.std.tolist() == pytest.approx([math.sqrt(14 / 3)] * 2)
    assert out.scores.tolist() == pytest.approx([2.0 - 0.5 * math.sqrt(14 / 3)] * 2)
    normalized = EnsembleReward([ModelReward(FakeHeadsModel([0.0, 1.0, 5.0]), "rm")], uncertainty_coef=0.5)
    assert normalized(["p"], ["x"]).tolist() == pytest.approx([1.0 - 0.25 * math.sqrt(14 / 3)])


def test_members_weigh_the_same_whatever_their_head_count():
    # member A heads (1, 3), member B one head 5: weights 1/4, 1/4, 1/2
    # mean = 1/4 + 3/4 + 5/2 = 3.5; variance = (2.5^2 + 0.5^2) / 4 + 1.5^2 / 2 = 2.75
    members = [ModelReward(FakeHeadsModel([1.0, 3.0]), "a", normalized=False),
               FunctionReward(lambda p, r: [5.0] * len(r), "five")]
    out = EnsembleReward(members, uncertainty_coef=2.0).score(["p"], ["x"])
    assert out.std.tolist() == pytest.approx([math.sqrt(2.75)])
    assert out.scores.tolist() == pytest.approx([3.5 - 2.0 * math.sqrt(2.75)])


def test_mixture_mean_std_matches_a_loop_over_heads():
    generator = torch.Generator().manual_seed(0)
    heads = [torch.randn(6, k, generator=generator) for k in (3, 1, 2)]
    mean, std = mixture_mean_std(heads)
    for row in range(6):
        pairs = [(1 / (len(heads) * h.shape[1]), h[row, j].item()) for h in heads for j in range(h.shape[1])]
        mu = sum(w * r for w, r in pairs)
        sigma = math.sqrt(sum(w * (r - mu) ** 2 for w, r in pairs))
        assert mean[row].item() == pytest.approx(mu, abs=1e-6)
        assert std[row].item() == pytest.approx(sigma, abs=1e-6)
    equal = [torch.randn(4, 3, generator=generator) for _ in range(2)]
    mean, std = mixture_mean_std(equal)
    torch.testing.assert_close(std, torch.cat(equal, -1).std(-1, unbiased=False))


def test_per_head_scores_are_checked():
    class Broken(FakeHeadsModel):
        def score_texts(self, prompts, responses, normalized=False, per_head=False):
            return torch.zeros(len(responses))

    with pytest.raises(RewardError, match=r"per-head scores have shape \(2,\), expected \(2, heads\)"):
        ModelReward(Broken([1.0]), "broken").heads(["p", "q"], ["x", "y"])


def test_build_reward_penalises_a_saved_k_head_model_by_its_head_spread(tmp_path):
    from helpers_models import tiny_gpt2, tiny_tokenizer

    from rlhfkit.models.reward_model import RewardModel, RewardModelSettings

    tokenizer = tiny_tokenizer()
    model = RewardModel(tiny_gpt2(tokenizer, seed=3).transformer, tokenizer,
                        RewardModelSettings(num_heads=3, max_length=64, mean=0.5, std=2.0)).eval()
    model.save_pretrained(tmp_path / "rm")
    prompts, responses = ["The movie was", "The food was", "Why"], [" great.", " bad and cold", ""]
    heads = model.score_texts(prompts, responses, normalized=True, per_head=True)
    out = build_reward([str(tmp_path / "rm")], uncertainty_coef=0.5).score(prompts, responses)
    expected = heads.mean(-1) - 0.5 * heads.std(-1, unbiased=False)
    torch.testing.assert_close(out.scores, expected, atol=1e-5, rtol=1e-5)
    assert (out.std > 0).all()


def test_build_reward_from_function_spec_and_empty_error():
    reward = build_reward(function_specs=[f"{__name__}:length_reward"])
    assert reward(["p"], ["abcd"]).tolist() == [4.0]
    with pytest.raises(RewardError, match="no reward given"):
        build_reward()


def test_check_scores_skip_and_error():
    scores = torch.tensor([1.0, math.nan, math.inf])
    bad = check_scores(scores, ["p0", "p1", "p2"], ["r0", "r1", "r2"], "fn", "skip")
    assert bad.tolist() == [False, True, True]
    with pytest.raises(RewardError, match=r"record 1 \(prompt 'p1'.*2 of 3"):
        check_scores(scores, ["p0", "p1", "p2"], ["r0", "r1", "r2"], "fn", "error")
    stats = describe(scores)
    assert stats["mean"] == 1.0 and stats["std"] == 0.0
    assert math.isnan(describe(torch.tensor([math.nan]))["mean"])
