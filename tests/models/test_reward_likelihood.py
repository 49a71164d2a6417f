"""A reward head that also reads the response's mean log-probability under the trunk's own LM head."""

from __future__ import annotations

import random

import pytest
import torch
from helpers_models import save_tiny_model, tiny_gpt2, tiny_tokenizer
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhfkit.data.preference_io import write_jsonl
from rlhfkit.data.records import Comparison, Rating
from rlhfkit.models.likelihood import (FrozenLikelihood, RewardHead, mean_response_logprob, response_mask,
                                        head_token_logprobs)
from rlhfkit.models.reward_model import RewardModel, RewardModelError, RewardModelSettings, load_reward_model
from rlhfkit.reward.batching import attach_likelihoods, collate, encode_records
from rlhfkit.reward.config import RewardLossConfig, RewardOptimConfig, RewardTrainConfig
from rlhfkit.reward.pipeline import build_model, train_reward_model
from rlhfkit.reward.selection import (fit_likelihood_alone, golden_section_minimum, heldout_loss,
                                      likelihood_alone_loss, likelihood_weight_loss, refit_likelihood_weight)
from rlhfkit.reward.trainer import RewardTrainer

PROMPTS = ["The movie was", "Please explain why the sky"]
RESPONSES = [" great and the actors were wonderful.", " is blue."]


def _model(likelihood: bool = True, seed: int = 0) -> RewardModel:
    tokenizer = tiny_tokenizer()
    lm = tiny_gpt2(tokenizer, seed=seed, initializer_range=0.2)
    return RewardModel(lm, tokenizer, RewardModelSettings(max_length=64, likelihood=likelihood)).eval()


def _by_hand(lm: torch.nn.Module, ids: list[int], start: int) -> float:
    """Mean log p of tokens start..end, one unpadded sequence through the LM's own forward."""
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return float(torch.stack([logp[t - 1, ids[t]] for t in range(max(start, 1), len(ids))]).mean())


def test_response_mask_covers_the_response_up_to_the_last_real_token():
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    starts = torch.tensor([2, 0, 1])
    assert response_mask(mask, starts).int().tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 1, 0, 0, 0]]


def test_mean_response_logprob_equals_each_sequence_scored_alone():
    model = _model()
    sequences, _, starts = model.encode_spans(PROMPTS, RESPONSES)
    width = max(map(len, sequences))
    ids = torch.tensor([s + [model.pad_id] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    lm = model.backbone
    with torch.no_grad():
        hidden = lm.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        got = mean_response_logprob(hidden, ids, mask, torch.tensor(starts), lm.get_output_embeddings())
    for row, (seq, start) in enumerate(zip(sequences, starts)):
        assert got[row].item() == pytest.approx(_by_hand(lm, seq, start), abs=1e-4)


def test_a_zero_head_with_unit_likelihood_weight_scores_the_likelihood():
    model = _model()
    model.reset_head(0.0)
    with torch.no_grad():
        model.head.likelihood_weight.fill_(1.0 / model.head.likelihood_gain)
    sequences, _, starts = model.encode_spans(PROMPTS, RESPONSES)
    expected = [_by_hand(model.backbone, s, start) for s, start in zip(sequences, starts)]
    assert model.score_texts(PROMPTS, RESPONSES).tolist() == pytest.approx(expected, abs=1e-4)
    assert starts[0] == len(model.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"])


def test_a_fresh_likelihood_weight_is_zero_so_the_reward_is_the_pooled_heads():
    with_likelihood, plain = _model(), _model(likelihood=False)
    plain.backbone = with_likelihood.backbone.transformer
    plain.head.load_state_dict({k: v for k, v in with_likelihood.head.state_dict().items() if k != "likelihood_weight"})
    assert torch.count_nonzero(with_likelihood.head.likelihood_weight) == 0
    assert torch.allclose(with_likelihood.score_texts(PROMPTS, RESPONSES), plain.score_texts(PROMPTS, RESPONSES),
                          atol=1e-5)


def test_likelihood_reward_model_survives_save_and_load(tmp_path):
    model = _model()
    with torch.no_grad():
        model.head.likelihood_weight.fill_(0.7)
    before = model.score_texts(PROMPTS, RESPONSES)
    loaded = load_reward_model(model.save_pretrained(tmp_path / "rm"))
    assert loaded.settings.likelihood and loaded.head.likelihood_weight.item() == pytest.approx(0.7)
    assert loaded.backbone.get_output_embeddings() is not None
    assert torch.allclose(loaded.score_texts(PROMPTS, RESPONSES), before, atol=1e-5)


def test_what_cannot_read_a_likelihood_is_refused_by_name():
    tokenizer = tiny_tokenizer()
    with pytest.raises(RewardModelError, match="GPT2Model has none: load the trunk as a causal LM"):
        RewardModel(tiny_gpt2(tokenizer).transformer, tokenizer, RewardModelSettings(likelihood=True))
    classifier = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16,
                                                          n_layer=1, n_head=2, num_labels=1))
    with pytest.raises(RewardModelError, match="likelihood=true and likelihood_model need a causal LM trunk"):
        RewardModel(classifier, tokenizer, RewardModelSettings(likelihood=True))
    model = _model()
    ids, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(RewardModelError, match="pass response_start"):
        model(ids, mask)


def _likely_versus_random(model: RewardModel, n: int) -> list[Comparison]:
    """Pairs whose chosen answer is the LM's own greedy continuation and whose rejected one is random tokens."""
    tokenizer, lm = model.tokenizer, model.backbone
    rng = random.Random(0)
    vocabulary = [i for i in range(len(tokenizer)) if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
    prompts = [[rng.choice(vocabulary) for _ in range(4)] for _ in range(n)]
    with torch.no_grad():
        greedy = lm.generate(torch.tensor(prompts), max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[:, 4:].tolist()
    records = [Comparison(tokenizer.decode(p), tokenizer.decode(g), tokenizer.decode(rng.sample(vocabulary, 6)))
               for p, g in zip(prompts, greedy)]
    return [r for r in records if r.chosen != r.rejected and r.chosen.strip() and r.rejected.strip()]


def _frozen(tmp_path, seed: int = 1) -> FrozenLikelihood:
    """A tiny GPT-2 with a tokenizer of another vocabulary than the trunk's, saved and loaded as a frozen scorer."""
    tokenizer = tiny_tokenizer(vocab_size=300)
    tiny_gpt2(tokenizer, seed=seed, initializer_range=0.2).save_pretrained(tmp_path / "frozen")
    tokenizer.save_pretrained(tmp_path / "frozen")
    return FrozenLikelihood.load(tmp_path / "frozen")


def _held_out_accuracy(tmp_path, likelihood: bool, frozen: bool = False) -> tuple[float, RewardModel]:
    model = _model(likelihood=likelihood, seed=1)
    if not likelihood:
        model = RewardModel(model.backbone.transformer, model.tokenizer, RewardModelSettings(max_length=64),
                            _frozen(tmp_path) if frozen else None)
    model.reset_head(0.0)
    source = _model(seed=1)
    if frozen:
        source = RewardModel(model.frozen_likelihood.model, model.frozen_likelihood.tokenizer,
                             RewardModelSettings(likelihood=True))
    records = _likely_versus_random(source, 128)
    train, held_out = records[:96], records[96:]
    tokenizer = model.tokenizer
    encoded, _ = encode_records(train, tokenizer, max_length=64, eos_id=tokenizer.eos_token_id, min_prompt_tokens=4)
    config = RewardTrainConfig(output_dir=str(tmp_path / str(likelihood)), batch_size=16, progress=False,
                               save_every=0, report_to="none", head_lr=1e-2, likelihood=likelihood, epochs=2,
                               optim=RewardOptimConfig(lr=1e-12, warmup_ratio=0.0, schedule="constant"))
    if frozen:
        attach_likelihoods(encoded, train, model.frozen_likelihood.score)
    trainer = RewardTrainer(model.train(), config, encoded)
    if likelihood or frozen:
        assert all(len(r.response_starts) == 2 for r in encoded)
        batch = collate(encoded[:3], model.pad_id)
        assert batch.response_start.shape == (6,) and (batch.likelihood is not None) == frozen
        (group,) = [g for g in trainer.optimizer.param_groups
                    if any(p is model.head.likelihood_weight for p in g["params"])]
        assert group["lr"] == 1e-2
    for _ in range(12):
        trainer.train_step()
    chosen = model.score_texts([r.prompt for r in held_out], [r.chosen for r in held_out])
    rejected = model.score_texts([r.prompt for r in held_out], [r.rejected for r in held_out])
    return (chosen > rejected).float().mean().item(), model


def test_train_rm_learns_to_trust_the_likelihood_where_annotators_prefer_likely_answers(tmp_path):
    """Chosen: the LM's greedy continuation; rejected: random tokens; the trunk frozen (lr ~0). The head that
    reads the likelihood learns a positive weight for it (from 0, at head_lr) and ranks held-out pairs better
    than the same head without it."""
    with_likelihood, model = _held_out_accuracy(tmp_path, likelihood=True)
    without, _ = _held_out_accuracy(tmp_path, likelihood=False)
    assert model.head.likelihood_weight.item() > 0.05
    assert with_likelihood > without


def test_a_frozen_lm_scores_each_response_with_its_own_tokenizer(tmp_path):
    frozen = _frozen(tmp_path)
    tokenizer = frozen.tokenizer
    got = frozen.score(PROMPTS + PROMPTS[:1], RESPONSES + RESPONSES[:1])
    for row, (prompt, response) in enumerate(zip(PROMPTS + PROMPTS[:1], RESPONSES + RESPONSES[:1])):
        head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        body = tokenizer(response, add_special_tokens=False)["input_ids"]
        assert got[row].item() == pytest.approx(_by_hand(frozen.model, head + body, len(head)), abs=1e-4)
    assert frozen.score(["x"], [" yes"]).shape == (1,)
    with pytest.raises(ValueError, match="has no token to score"):
        frozen.score(["x"], [""])


def test_a_reward_model_reading_a_frozen_lm_scores_and_survives_save_and_load(tmp_path):
    tokenizer = tiny_tokenizer()
    model = RewardModel(tiny_gpt2(tokenizer, seed=0).transformer, tokenizer, RewardModelSettings(max_length=64),
                        _frozen(tmp_path))
    model.reset_head(0.0)
    with torch.no_grad():
        model.head.likelihood_weight.fill_(1.0 / model.head.likelihood_gain)
    expected = model.frozen_likelihood.score(PROMPTS, RESPONSES)
    assert torch.allclose(model.score_texts(PROMPTS, RESPONSES), expected, atol=1e-5)
    model.train()
    assert not model.frozen_likelihood.training
    assert not any(p.requires_grad for p in model.frozen_likelihood.parameters())
    loaded = load_reward_model(model.save_pretrained(tmp_path / "rm"))
    assert loaded.settings.likelihood_model == "likelihood_model" and (tmp_path / "rm" / "likelihood_model").is_dir()
    assert torch.allclose(loaded.score_texts(PROMPTS, RESPONSES), expected, atol=1e-5)
    ids, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(RewardModelError, match="pass likelihood=frozen_likelihood_of"):
        loaded(ids, mask)


def test_train_rm_learns_to_weigh_a_frozen_lms_likelihood(tmp_path):
    """As above, with the chosen answers the frozen LM's own continuations and a trunk that knows nothing."""
    with_frozen, model = _held_out_accuracy(tmp_path / "with", likelihood=False, frozen=True)
    without, _ = _held_out_accuracy(tmp_path / "without", likelihood=False, frozen=False)
    assert model.head.likelihood_weight.item() > 0.05
    assert with_frozen > without


def test_train_rm_settings_load_the_frozen_lm_and_refuse_two_likelihoods(tmp_path):
    _frozen(tmp_path)
    tokenizer = tiny_tokenizer()
    tiny_gpt2(tokenizer, seed=0).save_pretrained(tmp_path / "trunk")
    tokenizer.save_pretrained(tmp_path / "trunk")
    config = RewardTrainConfig(model=str(tmp_path / "trunk"), likelihood_model=str(tmp_path / "frozen"))
    model = build_model(config, seed=0, device=torch.device("cpu"))
    assert isinstance(model.frozen_likelihood, FrozenLikelihood) and model.head.likelihood_weight is not None
    with pytest.raises(RewardModelError, match="not both"):
        build_model(RewardTrainConfig(model=str(tmp_path / "trunk"), likelihood=True,
                                      likelihood_model=str(tmp_path / "frozen")), seed=0, device=torch.device("cpu"))


def _encoded_pairs(model: RewardModel) -> list:
    """Twelve likely-versus-random pairs of another model, encoded for ``model``."""
    records, _ = encode_records(_likely_versus_random(_model(seed=1), 12), model.tokenizer, max_length=64,
                                eos_id=model.tokenizer.eos_token_id, min_prompt_tokens=4)
    return records


def _frozen_lm_workspace(tmp_path, pairs: int, train: int) -> tuple[FrozenLikelihood, list[Comparison]]:
    """A frozen LM (tmp_path/frozen), pairs whose chosen answer is its own greedy continuation split into
    train.jsonl and eval.jsonl, and a tiny trunk (tmp_path/trunk)."""
    frozen = _frozen(tmp_path)
    source = RewardModel(frozen.model, frozen.tokenizer, RewardModelSettings(likelihood=True))
    records = _likely_versus_random(source, pairs)
    write_jsonl(records[:train], tmp_path / "train.jsonl")
    write_jsonl(records[train:], tmp_path / "eval.jsonl")
    save_tiny_model(tmp_path / "trunk")
    return frozen, records


def test_golden_section_finds_the_minimum_of_a_convex_function():
    calls = []

    def parabola(x: float) -> float:
        calls.append(x)
        return (x - 1.7) ** 2 + 3.0

    x, value = golden_section_minimum(parabola, -10.0, 10.0, evaluations=30)
    assert x == pytest.approx(1.7, abs=1e-3) and value == pytest.approx(3.0, abs=1e-6)
    assert len(calls) == 30 and all(-10.0 <= c <= 10.0 for c in calls)


def test_the_likelihood_weight_is_refit_to_the_held_out_minimum_and_kept_when_nothing_beats_it():
    head = RewardHead(8, 1, likelihood=True)

    def held_out_loss(per_nat: float) -> float:  # convex, lowest at 2.5 reward per nat
        return (per_nat - 2.5) ** 2

    before, after = refit_likelihood_weight(head, held_out_loss)
    assert before == 0.0 and after == pytest.approx(2.5, abs=1e-3)
    assert float(head.likelihood_weight.detach()) * head.likelihood_gain == pytest.approx(2.5, abs=1e-3)
    with torch.no_grad():
        head.likelihood_weight.fill_(2.5 / head.likelihood_gain)
    assert refit_likelihood_weight(head, held_out_loss)[1] == pytest.approx(2.5, abs=1e-9)


def test_the_held_out_loss_from_two_passes_equals_the_loss_at_each_weight():
    """Rewards are linear in the likelihood weight, so two forward passes give the loss at any weight."""
    model = _model()
    records = _encoded_pairs(model)
    loss = RewardLossConfig()
    with torch.no_grad():
        model.head.likelihood_weight.fill_(0.3 / model.head.likelihood_gain)
    loss_at = likelihood_weight_loss(model, records, loss, 4, torch.device("cpu"))
    assert float(model.head.likelihood_weight) * model.head.likelihood_gain == pytest.approx(0.3)  # put back
    for per_nat in (-2.0, 0.0, 0.3, 1.7):
        with torch.no_grad():
            model.head.likelihood_weight.fill_(per_nat / model.head.likelihood_gain)
        assert loss_at(per_nat) == pytest.approx(heldout_loss(model, records, loss, 4, torch.device("cpu")), rel=1e-5)


def test_train_rm_end_to_end_refits_the_weight_and_saves_the_frozen_lm(tmp_path, monkeypatch):
    from rlhfkit.reward import pipeline

    refits = []

    def recording(head, loss_at):  # type: ignore[no-untyped-def]
        refits.append(refit_likelihood_weight(head, loss_at))
        return refits[-1]

    monkeypatch.setattr(pipeline, "refit_likelihood_weight", recording)
    frozen, records = _frozen_lm_workspace(tmp_path, 96, 72)
    config = RewardTrainConfig(model=str(tmp_path / "trunk"), data=[str(tmp_path / "train.jsonl")],
                               eval_data=[str(tmp_path / "eval.jsonl")], likelihood_model=str(tmp_path / "frozen"),
                               output_dir=str(tmp_path / "run"), batch_size=8, early_stopping_fraction=0.25,
                               progress=False, report_to="none", normalization_samples=16, bootstrap_samples=50,
                               likelihood_fit="joint")
    outcome = train_reward_model(config)
    model = load_reward_model(outcome.model_dir)
    assert (outcome.model_dir / "likelihood_model" / "config.json").is_file()
    (before, after), = refits
    assert after > 0 and float(model.head.likelihood_weight.detach()) * model.head.likelihood_gain == pytest.approx(after)
    assert outcome.evaluation.metrics["pairwise_accuracy"].value >= 0.8


def test_token_logprobs_in_chunks_equal_one_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    states, tokens = torch.randn(10, 8), torch.randint(0, 50, (10,))
    expected = torch.log_softmax(head(states), -1).gather(1, tokens[:, None])[:, 0]
    assert torch.allclose(head_token_logprobs(states, tokens, head, chunk=3), expected, atol=1e-6)
    assert head_token_logprobs(states[:0], tokens[:0], head).shape == (0,)


def test_token_logprobs_with_gradients_past_the_budget_run_the_head_in_vocabulary_blocks(monkeypatch):
    import rlhfkit.models.head_logprobs as head_module

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    states, tokens = torch.randn(10, 8, requires_grad=True), torch.randint(0, 50, (10,))
    expected = head_token_logprobs(states, tokens, head, chunk=3)
    expected_grads = torch.autograd.grad(expected.sum(), [states, head.weight])
    monkeypatch.setitem(head_module.HEAD_LOGIT_ELEMENTS, "cpu", 0)
    monkeypatch.setitem(head_module.HEAD_CHUNK_ELEMENTS, "cpu", 10 * 16)  # blocks of 16 columns
    calls = []
    monkeypatch.setattr(head_module.HeadLogprobs, "apply",
                        lambda *args, apply=head_module.HeadLogprobs.apply: calls.append(1) or apply(*args))
    got = head_token_logprobs(states, tokens, head, chunk=3)
    grads = torch.autograd.grad(got.sum(), [states, head.weight])
    assert calls == [1]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, atol=1e-6, rtol=1e-5)


def _bradley_terry_weight(differences: list[float]) -> float:
    """The maximum-likelihood w of P(chosen) = sigmoid(w * d), by bisection on the score sum d * sigmoid(-w d)."""
    d = torch.tensor(differences, dtype=torch.float64)

    def score(w: float) -> float:
        return float((d * torch.sigmoid(-w * d)).sum())

    low, high = -100.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if score(middle) > 0 else (low, middle)
    return (low + high) / 2


def test_the_likelihood_alone_loss_is_bradley_terry_on_the_frozen_scores_and_ignores_ratings(tmp_path):
    frozen = _frozen(tmp_path)
    source = RewardModel(frozen.model, frozen.tokenizer, RewardModelSettings(likelihood=True))
    pairs = _likely_versus_random(source, 10)
    tokenizer = tiny_tokenizer()
    model = RewardModel(tiny_gpt2(tokenizer, seed=0).transformer, tokenizer, RewardModelSettings(max_length=64),
                        frozen)
    ratings = [Rating(p.prompt, p.chosen, 1.0, (0.0, 1.0)) for p in pairs[:3]]
    records = [*pairs, *ratings]
    encoded, _ = encode_records(records, tokenizer, max_length=64, eos_id=tokenizer.eos_token_id,
                                min_prompt_tokens=4)
    attach_likelihoods(encoded, records, frozen.score)
    loss_at = likelihood_alone_loss(model, encoded, RewardLossConfig(), 4, torch.device("cpu"))
    scores = frozen.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    differences = (scores[:len(pairs)] - scores[len(pairs):]).double()
    for per_nat in (-1.0, 0.0, 0.7, 3.0):
        by_hand = float(torch.nn.functional.softplus(-per_nat * differences).mean())
        assert loss_at(per_nat) == pytest.approx(by_hand, rel=1e-5)
    assert likelihood_alone_loss(model, [r for r in encoded if r.kind == "rating"], RewardLossConfig(), 4,
                                 torch.device("cpu")) is None
    per_nat = fit_likelihood_alone(model.head, loss_at)
    assert per_nat == pytest.approx(_bradley_terry_weight(differences.tolist()), abs=1e-3)
    assert float(model.head.likelihood_weight) * model.head.likelihood_gain == pytest.approx(per_nat)


def test_a_flat_likelihood_loss_gets_weight_zero_and_a_separating_one_the_bound():
    head = RewardHead(8, 1, likelihood=True)
    assert fit_likelihood_alone(head, lambda per_nat: 0.6931) == 0.0
    assert float(head.likelihood_weight) == 0.0
    separable = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)  # every chosen answer likelier
    per_nat = fit_likelihood_alone(head, lambda w: float(torch.nn.functional.softplus(-w * separable).mean()),
                                   limit=50.0)
    assert per_nat == pytest.approx(50.0, abs=1e-3)


def test_the_trunks_likelihood_alone_loss_reads_only_the_likelihood():
    """With the trunk's own likelihood, the loss at w equals the held-out loss of a head whose pooled part is zero."""
    model = _model()
    records = _encoded_pairs(model)
    loss = RewardLossConfig()
    with torch.no_grad():
        model.head.weight.normal_()
        model.head.bias.fill_(0.5)
    loss_at = likelihood_alone_loss(model, records, loss, 4, torch.device("cpu"))
    model.reset_head(0.0)
    for per_nat in (-2.0, 0.5, 1.7):
        with torch.no_grad():
            model.head.likelihood_weight.fill_(per_nat / model.head.likelihood_gain)
        assert loss_at(per_nat) == pytest.approx(heldout_loss(model, records, loss, 4, torch.device("cpu")), rel=1e-5)


def test_train_rm_fits_a_frozen_lms_weight_alone_after_the_pooled_head_trained_without_it(tmp_path):
    """The default likelihood_fit=separate: the pooled head trains exactly as without the frozen LM (same
    rewards once the likelihood term is taken off), and the weight is the Bradley-Terry fit of the likelihood
    alone on every training pair (early-stopping slice included)."""
    frozen, records = _frozen_lm_workspace(tmp_path, 80, 64)
    settings = dict(model=str(tmp_path / "trunk"), data=[str(tmp_path / "train.jsonl")],
                    eval_data=[str(tmp_path / "eval.jsonl")], batch_size=8, early_stopping_fraction=0.25, epochs=1,
                    progress=False, report_to="none", normalization_samples=16, bootstrap_samples=50)
    with_lm = load_reward_model(train_reward_model(RewardTrainConfig(
        **settings, likelihood_model=str(tmp_path / "frozen"), output_dir=str(tmp_path / "with"))).model_dir)
    without = load_reward_model(train_reward_model(RewardTrainConfig(
        **settings, output_dir=str(tmp_path / "without"))).model_dir)
    per_nat = float(with_lm.head.likelihood_weight) * with_lm.head.likelihood_gain
    train = records[:64]
    scores = frozen.score([r.prompt for r in train] * 2, [r.chosen for r in train] + [r.rejected for r in train])
    assert per_nat > 0
    assert per_nat == pytest.approx(_bradley_terry_weight((scores[:64] - scores[64:]).tolist()), abs=1e-3)
    prompts, responses = [r.prompt for r in records[64:]], [r.chosen for r in records[64:]]
    pooled = with_lm.score_texts(prompts, responses) - per_nat * frozen.score(prompts, responses)
    assert torch.allclose(pooled, without.score_texts(prompts, responses), atol=1e-4)


def test_without_pairs_or_rankings_the_separate_fit_leaves_the_weight_at_zero(tmp_path, monkeypatch):
    from rlhfkit.reward import pipeline

    said = []
    monkeypatch.setattr(pipeline.console, "print", lambda *parts, **_: said.append(" ".join(map(str, parts))))
    frozen = _frozen(tmp_path)
    source = RewardModel(frozen.model, frozen.tokenizer, RewardModelSettings(likelihood=True))
    ratings = [Rating(p.prompt, p.chosen, float(i % 5 + 1), (1.0, 5.0))
               for i, p in enumerate(_likely_versus_random(source, 24))]
    write_jsonl(ratings, tmp_path / "train.jsonl")
    save_tiny_model(tmp_path / "trunk")
    outcome = train_reward_model(RewardTrainConfig(
        model=str(tmp_path / "trunk"), data=[str(tmp_path / "train.jsonl")], likelihood_model=str(tmp_path / "frozen"),
        output_dir=str(tmp_path / "run"), batch_size=8, early_stopping_fraction=0.0, epochs=1, progress=False,
        report_to="none", normalization_samples=16, bootstrap_samples=20))
    assert float(load_reward_model(outcome.model_dir).head.likelihood_weight) == 0.0
    assert any(line.startswith("likelihood weight left at 0") for line in said)
