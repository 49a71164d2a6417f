"""Reward models on real human preferences: train-rm against shorter-wins and TF-IDF baselines.

Data: FineGrainedRLHF qa-feedback (``tasks/qa_feedback/data/dev_feedback.json`` from
github.com/allenai/FineGrainedRLHF, Apache-2.0; not shipped here): 500 questions, four sampled
answers each, 2,616 strict pairwise human preferences. Questions are split, not pairs: the
evaluation questions are drawn at random until they hold at least ``--eval-pairs`` pairs.

``--folds K`` evaluates every pair once instead: questions are dealt into K folds, and each fold is
scored by a base and a reward model trained on the other K-1 (K bases, K reward models); the figures
and their confidence intervals are then over all ~2,600 pairs.

A user's tiny base: a byte-level BPE tokenizer and a small GPT-2 built from config and pretrained
briefly (next-token loss) on the training split's question+answer texts (``--base-text qa+context``
adds the training questions' Wikipedia passages and reference answers), with the tokenizer, batching
and schedule functions that build rlhfkit's built-in model. Then ``train-rm`` with its defaults (or
``--set`` overrides for experiments). Baselines on the same split: the shorter answer wins, and a
TF-IDF logistic regression on (chosen - rejected) features, its C chosen by question-grouped
cross-validation on the training split. A third, ``passage_support``, reads what the annotators read:
the answer with the larger share of its word trigrams found in the question's Wikipedia passages wins
(no training; it says how much of the preference a reader of the passages could recover, which a
reward model fed only the question cannot). A fourth, ``base_likelier``, asks the reward model's base
itself: the answer whose tokens it finds likelier on average (after the prompt) wins, no preference
learned; it says what the base knows before train-rm starts. ``tfidf_plus_likelihood`` gives the TF-IDF
regression that base's log-likelihood difference as one more input: what a reward model able to read
its trunk's likelihood could add to the words. ``--rm-context passages`` puts the
passages before the question in the reward model's (and its base's) text. ``--knowledge-steps N``
first pretrains one base on every question's passages (no answers, no preferences: the stand-in for a
real LM that has read Wikipedia) and starts each fold's brief pretraining from it (``--pretrain-steps
0``: the reward model starts from it directly; ``--base-text qa+passages`` has that brief pretraining read
every passage again beside the training text, so it keeps what the knowledge base knows). Train-rm's
``likelihood=true`` and ``likelihood_model=DIR`` (``--set``) let the reward head read a likelihood, the
trunk's own or a frozen LM's such as the knowledge base's directory (``--likelihood-knowledge``; or the
reward model's own starting base, frozen: ``--likelihood-base``). For a model reading a frozen LM the line
also holds its pooled part alone (the likelihood term taken off: with ``likelihood_fit=separate``, the
default model's accuracy), the frozen LM alone, and TF-IDF given the same likelihood as one more input (the
fair baseline). Confidence intervals resample questions (a cluster bootstrap), since pairs of one question
share answers.

``--edits`` adds the training questions' human corrections (corrected over original ``prediction 1``,
:mod:`rlhfkit.data.fine_grained_edits`) to train-rm's data; the evaluation pairs stay the same.

Run: python bench/reward_real.py --data dev_feedback.json [--folds 5 [--fold F]] [--edits]
     [--rm-context passages --n-positions 1024 --set max_length=1024] [--set optim.lr=1e-3 ...]
(ONE JSON line on stdout; train-rm's messages go to stderr)
The base is cached in ``--work`` (keyed by its settings). ``confidence`` says whether the model knows
when it is wrong: accuracy of the most confident half of the pairs minus the least confident half,
confidence being |margin|, and with several heads or members (``--set ensemble_size=5``) also the
share of members agreeing with the decision, their low spread and |margin|/spread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Callable, Collection, Sequence  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, GPT2LMHeadModel  # noqa: E402

from rlhfkit.config import load_config, parse_overrides  # noqa: E402
from rlhfkit.data.fine_grained_edits import read_fine_grained_edits  # noqa: E402
from rlhfkit.data.preference_io import iter_rows, read_feedback, write_jsonl  # noqa: E402
from rlhfkit.data.records import Comparison  # noqa: E402
from rlhfkit.models.builtin import (BuiltinRecipe, _new_model, _optimizer, collate, cosine_lr_factor,  # noqa: E402
                                    length_grouped_batches, quiet_transformers, train_tokenizer)
from rlhfkit.models.likelihood import FrozenLikelihood  # noqa: E402
from rlhfkit.models.reward_model import load_reward_model  # noqa: E402
from rlhfkit.reward.confidence import CONFIDENCES, confident_pairs, half_accuracy_gap  # noqa: E402
from rlhfkit.reward.config import RewardTrainConfig  # noqa: E402
from rlhfkit.reward.pipeline import train_reward_model  # noqa: E402

THREADS = 2
TOKEN = re.compile(r"(?u)\b\w\w+\b")
WORD = re.compile(r"\w+")
BOOTSTRAP = 2000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the machine was)."""
    with open("/proc/loadavg") as handle:
        return [float(x) for x in handle.read().split()[:3]]


def split_by_question(records: Sequence[Comparison], numbers: Sequence[int], eval_pairs: int, seed: int
                      ) -> tuple[list[int], list[int]]:
    """Indices of (train, eval) pairs: whole questions go to eval, at random, until it has ``eval_pairs``."""
    by_question: dict[int, list[int]] = defaultdict(list)
    for index, number in enumerate(numbers):
        by_question[number].append(index)
    questions = sorted(by_question)
    random.Random(seed).shuffle(questions)
    held: list[int] = []
    taken = 0
    for taken, question in enumerate(questions, start=1):
        held.extend(by_question[question])
        if len(held) >= eval_pairs:
            break
    train = [i for q in questions[taken:] for i in by_question[q]]
    return sorted(train), sorted(held)


def windows(ids: Sequence[int], size: int) -> list[list[int]]:
    """``ids`` cut into consecutive pieces of at most ``size`` tokens (a long passage is read whole, not cut off)."""
    return [list(ids[start:start + size]) for start in range(0, len(ids), size)]


def kfold_by_question(numbers: Sequence[int], folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, eval) pair indices of each fold: questions shuffled by ``seed`` and dealt round-robin into
    ``folds`` groups, so that every pair is evaluated exactly once, by a model that never saw its question."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    questions = sorted(set(numbers))
    if len(questions) < folds:
        raise ValueError(f"{folds} folds need at least {folds} questions, the data has {len(questions)}")
    random.Random(seed).shuffle(questions)
    fold_of = {question: i % folds for i, question in enumerate(questions)}
    return [([i for i, n in enumerate(numbers) if fold_of[n] != fold],
             [i for i, n in enumerate(numbers) if fold_of[n] == fold]) for fold in range(folds)]


def row_passages(row: dict[str, object]) -> list[str]:
    """A qa-feedback row's Wikipedia passages, each as its title on one line and its sentences after it."""
    return [f"{p[0]}\n" + " ".join(str(part) for part in p[1:])
            for p in row.get("passages") or [] if isinstance(p, list) and len(p) > 1]


def context_texts(spec: str | Path, questions: Collection[int]) -> list[str]:
    """The Wikipedia passages (title, then text) and the reference answer of each given qa-feedback row:
    in-domain text a user has beside the preferences, for the base to read."""
    wanted, texts = set(questions), []
    for number, row in iter_rows(spec):
        if number not in wanted or not isinstance(row, dict):
            continue
        texts.extend(row_passages(row))
        if isinstance(row.get("gold"), str) and row["gold"].strip():
            texts.append(f"{row['question']}\n{row['gold']}")
    return texts


def passage_texts(spec: str | Path) -> dict[int, str]:
    """Each qa-feedback row's Wikipedia passages as one text (title, then text; passages on their own lines)."""
    return {number: "\n".join(row_passages(row)) for number, row in iter_rows(spec) if isinstance(row, dict)}


def with_passages(records: Sequence[Comparison], numbers: Sequence[int], passages: dict[int, str],
                  words: int | None = None) -> list[Comparison]:
    """``records`` whose prompts carry their question's passages (the first ``words`` words when given)
    before the question: what the annotators judged the answers against."""
    contexts = {n: text if words is None else " ".join(text.split(" ")[:words]) for n, text in passages.items()}
    return [replace(r, prompt=f"{contexts[n]}\n\nQuestion: {r.prompt}" if contexts.get(n) else r.prompt)
            for r, n in zip(records, numbers)]


def trigram_support(answer: str, passage: str) -> float:
    """Share of the answer's word trigrams (lower-cased) that also occur in the passage: how much of it
    the passage backs, a hand-made reader that needs no training (0 for answers under three words)."""
    def trigrams(text: str) -> set[tuple[str, ...]]:
        words = WORD.findall(text.lower())
        return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}
    said = trigrams(answer)
    return len(said & trigrams(passage)) / len(said) if said else 0.0


def pretrain_base(texts: Sequence[str], out: Path, recipe: BuiltinRecipe, start: Path | None = None
                  ) -> dict[str, float]:
    """Tokenizer + small GPT-2 from config (or the tokenizer and weights saved in ``start``), trained with
    next-token loss on ``texts``; saved in ``out``."""
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    if start is None:
        tokenizer = train_tokenizer(list(texts), recipe.vocab_size, recipe.n_positions)
        model = _new_model(recipe, tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(start)
        model = GPT2LMHeadModel.from_pretrained(start)
    rows = [chunk for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
            for chunk in windows(ids + [tokenizer.eos_token_id], recipe.n_positions)]
    optimizer = _optimizer(model, recipe)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_lr_factor(
        step, recipe.warmup_steps, recipe.steps, recipe.min_lr_ratio))
    rng = random.Random(recipe.seed)
    batches: list[list[int]] = []
    losses: list[float] = []
    model.train()
    for _ in range(recipe.steps):
        if not batches:
            batches = length_grouped_batches(rows, recipe.batch_size, rng)
        ids, mask, labels = collate([rows[i] for i in batches.pop()], tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    stats = {"pretrain_seconds": round(time.perf_counter() - started, 1), "first_loss": round(losses[0], 3),
             "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 3), "documents": len(rows),
             "tokens": sum(map(len, rows)), "parameters": sum(p.numel() for p in model.parameters())}
    (out / "pretrain.json").write_text(json.dumps(stats) + "\n")
    return stats


def answer_logprobs(base: Path, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """Mean next-token log-probability of each answer's tokens after its prompt under the base LM (the
    last ``n_positions`` tokens of prompt+answer): how familiar the base finds what the answer says."""
    return FrozenLikelihood.load(base).score(list(prompts), list(answers)).double().numpy()


def every_passage(spec: str | Path) -> list[str]:
    """Every question's Wikipedia passages, each once, sorted: what the knowledge base reads."""
    return sorted({text for _, row in iter_rows(spec) if isinstance(row, dict) for text in row_passages(row)})


def knowledge_base(args: argparse.Namespace, recipe: BuiltinRecipe) -> Path:
    """A base that has read every question's Wikipedia passages (``--knowledge-steps`` of next-token loss;
    no answers, no preferences): the stand-in for a pretrained LM, which read Wikipedia before any user
    fine-tuned it. Shared by all folds and cached in ``--work``."""
    texts = every_passage(args.data)
    recipe = replace(recipe, steps=args.knowledge_steps, seed=0)  # one pretrained LM, whatever the fold seed
    out = Path(args.work) / f"knowledge-{hashlib.sha256(repr((recipe, texts)).encode()).hexdigest()[:12]}"
    if not (out / "pretrain.json").is_file():
        pretrain_base(texts, out, recipe)
    return out


def tfidf_matrix(texts: Sequence[str], vocabulary: dict[str, int], idf: np.ndarray) -> np.ndarray:
    """L2-normalized TF-IDF rows (scikit-learn's defaults: raw counts, smooth idf, words of 2+ characters)."""
    out = np.zeros((len(texts), len(vocabulary)))
    for row, text in enumerate(texts):
        for word, count in Counter(TOKEN.findall(text.lower())).items():
            if word in vocabulary:
                out[row, vocabulary[word]] = count
    out *= idf
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def fit_tfidf(texts: Sequence[str]) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary and smooth idf of ``texts``."""
    documents = Counter(word for text in texts for word in set(TOKEN.findall(text.lower())))
    vocabulary = {word: i for i, word in enumerate(sorted(documents))}
    df = np.array([documents[w] for w in sorted(documents)], dtype=float)
    return vocabulary, np.log((1 + len(texts)) / (1 + df)) + 1.0


def fit_logistic(differences: np.ndarray, c: float) -> np.ndarray:
    """L2 logistic regression without intercept on both orientations of each pair (L-BFGS, like sklearn's C)."""
    x = torch.tensor(np.concatenate([differences, -differences]), dtype=torch.float64)
    y = torch.cat([torch.ones(len(differences)), torch.zeros(len(differences))]).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = c * torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y, reduction="sum") + 0.5 * w @ w
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().numpy()


def tfidf_differences(fit: Sequence[Comparison], use: Sequence[Comparison]) -> tuple[np.ndarray, np.ndarray]:
    """TF-IDF (chosen - rejected) rows of ``fit`` and ``use``, the vocabulary and idf fitted on ``fit``'s answers."""
    vocabulary, idf = fit_tfidf(sorted({t for r in fit for t in (r.chosen, r.rejected)}))

    def features(rs: Sequence[Comparison]) -> np.ndarray:
        return tfidf_matrix([r.chosen for r in rs], vocabulary, idf) - tfidf_matrix([r.rejected for r in rs],
                                                                                  vocabulary, idf)
    return features(fit), features(use)


def tfidf_baseline(train: Sequence[Comparison], train_groups: Sequence[int], test: Sequence[Comparison],
                   seed: int) -> tuple[np.ndarray, float]:
    """Per-pair correctness (1 / 0.5 / 0) of TF-IDF logistic regression and its C (grouped 5-fold CV)."""
    groups = sorted(set(train_groups))
    random.Random(seed).shuffle(groups)
    fold_of = {g: i % 5 for i, g in enumerate(groups)}
    scores = {}
    for c in (0.1, 0.3, 1.0, 3.0, 10.0):
        correct = []
        for fold in range(5):
            fit = [r for r, g in zip(train, train_groups) if fold_of[g] != fold]
            use = [r for r, g in zip(train, train_groups) if fold_of[g] == fold]
            x_fit, x_use = tfidf_differences(fit, use)
            correct.extend(correctness(x_use @ fit_logistic(x_fit, c)))
        scores[c] = float(np.mean(correct))
    best = max(scores, key=scores.get)
    x_train, x_test = tfidf_differences(train, test)
    return correctness(x_test @ fit_logistic(x_train, best)), best


def tfidf_with_feature(train: Sequence[Comparison], test: Sequence[Comparison], c: float,
                       train_feature: np.ndarray, test_feature: np.ndarray) -> np.ndarray:
    """Per-pair correctness of the TF-IDF logistic regression (at the C its own cross-validation chose) with
    one more input per pair, ``*_feature`` (chosen minus rejected, scaled by its training std), weight fitted."""
    x_train, x_test = tfidf_differences(train, test)
    scale = train_feature.std() or 1.0
    weights = fit_logistic(np.concatenate([x_train, (train_feature / scale)[:, None]], axis=1), c)
    return correctness(np.concatenate([x_test, (test_feature / scale)[:, None]], axis=1) @ weights)


def correctness(margins: np.ndarray) -> np.ndarray:
    """1 where the chosen side scores higher, 0.5 on a tie, 0 otherwise."""
    margins = np.asarray(margins, dtype=float)
    return np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))


def cluster_bootstrap(values: np.ndarray, groups: Sequence[int], statistic: Callable[[np.ndarray], float],
                      seed: int) -> tuple[float, float, float]:
    """Statistic and percentile 95% CI, resampling whole groups (questions) with replacement."""
    by_group: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        by_group[group].append(index)
    members = list(by_group.values())
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        picked = rng.integers(0, len(members), len(members))
        draws.append(statistic(values[np.concatenate([members[i] for i in picked])]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return round(statistic(values), 4), round(float(low), 4), round(float(high), 4)


def spread_test(margins: np.ndarray, groups: Sequence[int], seed: int) -> dict[str, dict[str, object]]:
    """Per confidence (members agreeing, low spread, |margin|, |margin|/spread): most-confident-half minus
    least-confident-half accuracy of the mean margin, with a question-level bootstrap CI (halves fixed on
    the full split; ties broken by |margin|).

    ``margins`` is (pairs, members) of chosen-minus-rejected rewards.
    """
    correct = correctness(margins.mean(axis=1))
    out: dict[str, dict[str, object]] = {}
    for kind in CONFIDENCES if margins.shape[1] > 1 else ("margin",):
        columns = np.stack([correct, confident_pairs(margins, kind).astype(float)], axis=1)
        value, low, high = cluster_bootstrap(columns, groups, lambda rows: half_accuracy_gap(rows[:, 0], rows[:, 1]),
                                             seed)
        out[kind] = {"confident_minus_unsure_acc": value, "ci": [low, high]}
    return out


def base_texts(args: argparse.Namespace, train: Sequence[Comparison], train_groups: Sequence[int]) -> list[str]:
    """What the split's base reads (``--base-text``): the training questions with each answer, plus the training
    questions' passages and reference answers (``qa+context``) or every question's passages (``qa+passages``:
    what the knowledge base read, read again so that the brief pretraining does not wash it out)."""
    texts = sorted({r.prompt + t for r in train for t in (r.chosen, r.rejected)})
    if args.base_text == "qa+context":
        return sorted({*texts, *context_texts(args.data, set(train_groups))})
    if args.base_text == "qa+passages":
        return sorted({*texts, *every_passage(args.data)})
    return texts


def evaluate_split(args: argparse.Namespace, records: Sequence[Comparison], numbers: Sequence[int],
                   train_idx: Sequence[int], eval_idx: Sequence[int], name: str) -> dict[str, object]:
    """Pretrain (or reuse) the split's base, train the reward model, score it and both baselines on the
    evaluation pairs; per-pair correctness and margins plus the split's own figures."""
    train, test = [records[i] for i in train_idx], [records[i] for i in eval_idx]
    train_groups, test_groups = [numbers[i] for i in train_idx], [numbers[i] for i in eval_idx]
    recipe = BuiltinRecipe(vocab_size=8192, n_positions=args.n_positions, n_embd=args.n_embd, n_layer=4,
                           n_head=4, steps=args.pretrain_steps, batch_size=args.pretrain_batch, lr=2e-3,
                           warmup_steps=30, seed=args.seed)
    texts = base_texts(args, train, train_groups)
    with quiet_transformers():
        knowledge = knowledge_base(args, recipe) if args.knowledge_steps else None
        # the fold bases start from the knowledge base, unless it is train-rm's frozen likelihood LM instead
        start = None if args.likelihood_knowledge else knowledge
        frozen = knowledge if args.likelihood_knowledge else None
        settings = (recipe, texts) if start is None else (recipe, texts, start)
        base = Path(args.work) / f"base-{hashlib.sha256(repr(settings).encode()).hexdigest()[:12]}"
        if start is not None and not args.pretrain_steps:
            base, base_stats = start, {}
        elif (base / "pretrain.json").is_file():
            base_stats = json.loads((base / "pretrain.json").read_text())
        else:
            base_stats = pretrain_base(texts, base, recipe, start=start)
        if knowledge is not None:
            base_stats = {**base_stats, "knowledge": json.loads((knowledge / "pretrain.json").read_text())}
        if args.likelihood_base:
            frozen = base

    run = Path(args.work) / f"rm-{name}"
    edits = read_fine_grained_edits(args.data, set(train_groups), args.edit_weight) if args.edits else None
    if edits is not None:
        print(f"edits of the training questions: {edits.summary()}", file=sys.stderr)
    write_jsonl([*train, *(edits.comparisons if edits else [])], run / "train.jsonl")
    write_jsonl(test, run / "eval.jsonl")
    overrides = parse_overrides([f"model={base}", f"data=[{run / 'train.jsonl'}]",
                                 f"eval_data=[{run / 'eval.jsonl'}]", f"output_dir={run / 'out'}",
                                 "progress=false", "report_to=none", "resume=false", "save_every=0",
                                 f"seed={args.rm_seed}", f"threads={args.threads}",
                                 *([f"likelihood_model={frozen}"] if frozen is not None else []), *args.overrides])
    config = load_config(RewardTrainConfig, None, overrides)
    rm_started = time.perf_counter()
    outcome = train_reward_model(config)
    rm_seconds = time.perf_counter() - rm_started
    model = load_reward_model(outcome.model_dir).eval()
    prompts = [r.prompt for r in test]
    chosen = model.score_texts(prompts, [r.chosen for r in test], per_head=True).numpy()
    rejected = model.score_texts(prompts, [r.rejected for r in test], per_head=True).numpy()
    margins = chosen - rejected
    rm_correct = correctness(margins.mean(axis=1))
    pairs = [*train, *test]
    familiarity = answer_logprobs(base, [r.prompt for r in pairs] * 2, [r.chosen for r in pairs]
                                  + [r.rejected for r in pairs])
    likelihood_gap = familiarity[:len(pairs)] - familiarity[len(pairs):]
    likelier = correctness(likelihood_gap[len(train):])

    shorter = correctness(np.array([len(r.rejected) - len(r.chosen) for r in test], dtype=float))
    split_key = hashlib.sha256(repr((list(train_idx), list(eval_idx), args.data)).encode()).hexdigest()[:12]
    cached = Path(args.work) / f"tfidf-{split_key}.json"
    if cached.is_file():
        saved = json.loads(cached.read_text())
        tfidf_correct, tfidf_c = np.array(saved["correct"]), saved["c"]
    else:
        tfidf_correct, tfidf_c = tfidf_baseline(train, train_groups, test, args.seed)
        cached.write_text(json.dumps({"correct": tfidf_correct.tolist(), "c": tfidf_c}))
    tfidf_likelihood = tfidf_with_feature(train, test, tfidf_c, likelihood_gap[:len(train)],
                                          likelihood_gap[len(train):])
    parts_of = likelihood_parts(model, prompts, test, margins)
    if parts_of:  # the fair baseline for a model that reads a frozen LM: TF-IDF given that LM's likelihood too
        parts_of["tfidf_frozen"] = tfidf_with_feature(train, test, tfidf_c, frozen_gap(model, train),
                                                      parts_of.pop("gap"))
    save_margins(run, test_groups, rm_correct, margins, args.rm_seed)
    return {"groups": test_groups, "rm": rm_correct, "margins": margins, "shorter": shorter, "tfidf": tfidf_correct,
            "likelier": likelier, "tfidf_likelihood": tfidf_likelihood, **parts_of,
            "figures": {
                **({"likelihood_weight_per_nat": parts_of["weight"]} if parts_of else {}),
                "train_pairs": len(train), "edit_pairs": len(edits.comparisons) if edits else 0,
                "eval_pairs": len(test), "eval_questions": len(set(test_groups)),
                "train_rm_accuracy": round(float(np.mean(rm_correct)), 4),
                "tfidf_accuracy": round(float(np.mean(tfidf_correct)), 4), "tfidf_c": tfidf_c,
                "train_accuracy_last_step": round(outcome.summaries[-1].last_metrics.get(
                    "train/pairwise_accuracy", math.nan), 3),
                "optimizer_steps": [s.steps for s in outcome.summaries], "max_length": model_max_length(model),
                "kept_steps": [s.best_step if s.best_step is not None else s.steps for s in outcome.summaries],
                "truncated_train_records": next((r.notes.get("truncated but kept", 0) for r in outcome.reports
                                                 if "truncated but kept" in r.notes), None),
                "base": {**base_stats, "n_positions": recipe.n_positions, "n_embd": recipe.n_embd,
                         "n_layer": recipe.n_layer, "vocab_size": recipe.vocab_size, "text": args.base_text},
                "train_rm_seconds": round(rm_seconds, 1)}}


FROZEN_PARTS = ("rm_pooled", "frozen_likelier", "tfidf_frozen")  # per-pair results of a model reading a frozen LM


def likelihood_parts(model: object, prompts: Sequence[str], test: Sequence[Comparison], margins: np.ndarray
                     ) -> dict[str, object]:
    """For a one-model reward model that reads a frozen LM: per-pair correctness of its pooled part alone (the
    likelihood term taken off) and of the frozen LM's likelihood alone, the likelihood gaps and the weight."""
    frozen = getattr(model, "frozen_likelihood", None)
    if frozen is None:
        return {}
    head = model.head
    weight = (head.likelihood_weight.detach().double() * head.likelihood_gain).numpy()
    gap = frozen_gap(model, test)
    pooled = margins - gap[:, None] * weight[None, :]
    return {"rm_pooled": correctness(pooled.mean(axis=1)), "frozen_likelier": correctness(gap), "gap": gap,
            "weight": [round(float(w), 4) for w in weight]}


def frozen_gap(model: object, pairs: Sequence[Comparison]) -> np.ndarray:
    """The frozen LM's mean log-probability of each pair's chosen answer minus its rejected one (nats)."""
    prompts, frozen = [r.prompt for r in pairs], model.frozen_likelihood
    return (frozen.score(prompts, [r.chosen for r in pairs]) - frozen.score(prompts, [r.rejected for r in pairs])
            ).double().numpy()


def save_margins(run: Path, groups: Sequence[int], correct: np.ndarray, margins: np.ndarray, rm_seed: int,
                 **baselines: np.ndarray) -> None:
    """Per-pair results of a run, for offline analysis (bench/reward_spread.py pools members by seed), with
    any ``baselines``' per-pair correctness (TF-IDF, the pooled part...)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "correct.json").write_text(json.dumps({"groups": list(groups), "train_rm": correct.tolist(),
                                                  "margins": margins.tolist(), "rm_seed": rm_seed,
                                                  **{name: values.tolist() for name, values in baselines.items()}}))


def main() -> None:
    """Split (once, or k-fold by question), pretrain bases, train reward models, score them and the
    baselines on every evaluation pair; print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="FineGrainedRLHF dev_feedback.json (or .json.gz).")
    parser.add_argument("--work", default="runs/reward-real", help="Base-model cache and train-rm output.")
    parser.add_argument("--eval-pairs", type=int, default=500, help="Minimum evaluation pairs (whole questions).")
    parser.add_argument("--folds", type=int, default=0, help="Evaluate every pair: k-fold by question, a base and "
                        "a reward model per fold (0: one split of --eval-pairs).")
    parser.add_argument("--fold", type=int, default=None, help="Run only this fold of --folds (folds spread over "
                        "processes; each saves its per-pair results in its run directory).")
    parser.add_argument("--seed", type=int, default=0, help="Split and base seed (and train-rm's by default).")
    parser.add_argument("--rm-seed", type=int, default=None, help="train-rm seed (default: --seed).")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="Next-token steps of the tiny base.")
    parser.add_argument("--n-positions", type=int, default=256, help="Context length of the tiny base.")
    parser.add_argument("--pretrain-batch", type=int, default=16, help="Sequences per pretraining step.")
    parser.add_argument("--rm-context", choices=("question", "passages"), default="question", help="What the "
                        "reward model (and its base) reads before an answer: the question, or the question's "
                        "Wikipedia passages and then the question.")
    parser.add_argument("--passage-words", type=int, default=None, help="With --rm-context passages: keep "
                        "the first this many words of the passages (the answers draw mostly on the first).")
    parser.add_argument("--n-embd", type=int, default=128, help="Width of the tiny base.")
    parser.add_argument("--base-text", choices=("qa", "qa+context", "qa+passages"), default="qa",
                        help="What the base reads: the training questions and answers, those plus their passages "
                        "and reference answers, or those plus every question's passages (with --knowledge-steps: "
                        "the passages read again, so the brief pretraining keeps what the knowledge base knows).")
    parser.add_argument("--knowledge-steps", type=int, default=0, help="First pretrain one base for this many "
                        "steps on every question's Wikipedia passages (no answers or preferences: what a real "
                        "pretrained LM has read), then the brief pretraining on the training text from it.")
    parser.add_argument("--likelihood-knowledge", action="store_true", help="With --knowledge-steps: keep the "
                        "default fold bases and give train-rm the knowledge base as its frozen likelihood model "
                        "(likelihood_model), instead of starting the fold bases from it.")
    parser.add_argument("--likelihood-base", action="store_true", help="Give train-rm a frozen copy of its own "
                        "starting base as its likelihood model (likelihood_model): what a user who starts from a "
                        "pretrained LM has at hand.")
    parser.add_argument("--threads", type=int, default=THREADS, help="Torch threads (2: the benchmarks' setting).")
    parser.add_argument("--label", default="defaults", help="Name of this try in the JSON line.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="train-rm key=value.")
    parser.add_argument("--edits", action="store_true", help="Add the training questions' human corrections "
                        "(corrected over original prediction) to train-rm's data.")
    parser.add_argument("--edit-weight", type=float, default=1.0, help="Record weight of each edit pair.")
    args = parser.parse_args()
    args.rm_seed = args.seed if args.rm_seed is None else args.rm_seed
    if args.likelihood_base and args.likelihood_knowledge:
        parser.error("--likelihood-base and --likelihood-knowledge each name train-rm's frozen LM: pick one")
    if args.likelihood_knowledge and args.knowledge_steps < 1:
        parser.error("--likelihood-knowledge needs --knowledge-steps (the knowledge base it hands to train-rm)")
    if args.pretrain_steps < 1 and args.knowledge_steps < 1:
        parser.error("--pretrain-steps 0 (the reward model straight from the knowledge base) needs --knowledge-steps")
    if args.fold is not None and not 0 <= args.fold < args.folds:
        parser.error(f"--fold {args.fold} needs --folds K with 0 <= fold < K (got --folds {args.folds})")
    torch.set_num_threads(args.threads)
    load_before, started = loadavg(), time.perf_counter()

    data = read_feedback(args.data)
    records = [r for r in data.records if isinstance(r, Comparison)]
    numbers = [n for r, n in zip(data.records, data.numbers) if isinstance(r, Comparison)]
    passages = passage_texts(args.data)
    support = correctness(np.array([trigram_support(r.chosen, passages.get(n, "")) - trigram_support(
        r.rejected, passages.get(n, "")) for r, n in zip(records, numbers)]))
    if args.rm_context == "passages":
        records = with_passages(records, numbers, passages, args.passage_words)
    if args.folds:
        splits = kfold_by_question(numbers, args.folds, args.seed)
        names = [f"{args.label}-{args.seed}-{args.rm_seed}-fold{f}of{args.folds}" for f in range(args.folds)]
        if args.fold is not None:
            splits, names = [splits[args.fold]], [names[args.fold]]
    else:
        splits = [split_by_question(records, numbers, args.eval_pairs, args.seed)]
        names = [f"{args.label}-{args.seed}-{args.rm_seed}"]
    parts = []
    for (train_idx, eval_idx), name in zip(splits, names):
        parts.append(evaluate_split(args, records, numbers, train_idx, eval_idx, name))
        print(f"{name}: {json.dumps(parts[-1]['figures'])}", file=sys.stderr)
    pooled = {key: np.concatenate([part[key] for part in parts])
              for key in ("rm", "margins", "shorter", "tfidf", "likelier", "tfidf_likelihood")}
    groups = [g for part in parts for g in part["groups"]]
    pooled["support"] = np.concatenate([support[eval_idx] for _, eval_idx in splits])
    if all(FROZEN_PARTS[0] in part for part in parts):
        pooled.update({key: np.concatenate([part[key] for part in parts]) for key in FROZEN_PARTS})
    if args.folds and args.fold is None:
        save_margins(Path(args.work) / f"rm-{args.label}-k{args.folds}-{args.seed}-{args.rm_seed}", groups,
                     pooled["rm"], pooled["margins"], args.rm_seed, tfidf=pooled["tfidf"],
                     **{key: pooled[key] for key in FROZEN_PARTS if key in pooled})

    def ci(values: np.ndarray) -> tuple[float, float, float]:
        return cluster_bootstrap(values, groups, lambda v: float(np.mean(v)), args.seed)

    figures = [part["figures"] for part in parts]
    rm_acc, shorter_acc, tfidf_acc, gain = (ci(pooled["rm"]), ci(pooled["shorter"]), ci(pooled["tfidf"]),
                                            ci(pooled["rm"] - pooled["tfidf"]))
    support_acc, likelier_acc = ci(pooled["support"]), ci(pooled["likelier"])
    plus_likelihood, likelihood_gain = ci(pooled["tfidf_likelihood"]), ci(pooled["tfidf_likelihood"] - pooled["tfidf"])
    result = {
        "bench": "reward_real", "label": args.label, "overrides": args.overrides, "seed": args.seed,
        "rm_seed": args.rm_seed, "folds": args.folds or None, "base_text": args.base_text,
        "rm_context": args.rm_context, "pretrain_steps": args.pretrain_steps, "knowledge_steps": args.knowledge_steps,
        "likelihood_knowledge": args.likelihood_knowledge, "likelihood_base": args.likelihood_base,
        "edit_weight": args.edit_weight if args.edits else None,
        "train_pairs": sum(f["train_pairs"] for f in figures) // len(figures),
        "edit_pairs": sum(f["edit_pairs"] for f in figures) // len(figures),
        "eval_pairs": len(groups), "eval_questions": len(set(groups)),
        "train_rm_accuracy": rm_acc[0], "train_rm_ci": list(rm_acc[1:]),
        "shorter_wins_accuracy": shorter_acc[0], "shorter_wins_ci": list(shorter_acc[1:]),
        "tfidf_accuracy": tfidf_acc[0], "tfidf_ci": list(tfidf_acc[1:]),
        "rm_minus_tfidf": gain[0], "rm_minus_tfidf_ci": list(gain[1:]),
        "passage_support_accuracy": support_acc[0], "passage_support_ci": list(support_acc[1:]),
        "base_likelier_accuracy": likelier_acc[0], "base_likelier_ci": list(likelier_acc[1:]),
        "tfidf_plus_likelihood_accuracy": plus_likelihood[0], "tfidf_plus_likelihood_ci": list(plus_likelihood[1:]),
        "likelihood_minus_tfidf": likelihood_gain[0], "likelihood_minus_tfidf_ci": list(likelihood_gain[1:]),
        **({"per_fold": figures} if args.folds else {key: value for key, value in figures[0].items()
                                                     if key not in ("train_pairs", "edit_pairs", "eval_pairs",
                                                                    "eval_questions", "train_rm_accuracy",
                                                                    "tfidf_accuracy")}),
        "wall_seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": args.threads, "loadavg_before": load_before, "loadavg_after": loadavg()}
    if "rm_pooled" in pooled:
        for key, values in (("pooled_part_accuracy", pooled["rm_pooled"]),
                            ("pooled_part_minus_tfidf", pooled["rm_pooled"] - pooled["tfidf"]),
                            ("rm_minus_pooled_part", pooled["rm"] - pooled["rm_pooled"]),
                            ("frozen_likelier_accuracy", pooled["frozen_likelier"]),
                            ("tfidf_plus_frozen_accuracy", pooled["tfidf_frozen"]),
                            ("rm_minus_tfidf_plus_frozen", pooled["rm"] - pooled["tfidf_frozen"])):
            figure = ci(values)
            result[key], result[f"{key}_ci"] = figure[0], list(figure[1:])
    result["confidence"] = spread_test(pooled["margins"], groups, args.seed)
    print(json.dumps(result))


def model_max_length(model: object) -> int:
    """The token limit a reward model (or the first member of an ensemble) encodes with."""
    member = getattr(model, "members", [model])[0]
    return int(member.settings.max_length)


if __name__ == "__main__":
    main()
