"""Reward sources: functions by spec, ensembles, reward-model wrapper, non-finite handling."""

from __future__ import annotations

import math

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
