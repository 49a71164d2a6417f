"""``train-rm`` end to end: read and validate feedback, split, train (one model, k heads or k members),
store normalization statistics, save the final model, evaluate, and write the reports.

Output directory layout: ``checkpoints/`` (resumable), ``logs/`` (metrics.jsonl, TensorBoard),
``model/`` (the reward model to use downstream), ``data_report.json``, ``eval.json``,
``reliability.png``; an ensemble trains each member in ``members/member-<i>/``.

Under ``torchrun`` every process reads the data and trains its shard of each global batch (see
:mod:`rlhfkit.reward.trainer`); evaluation and normalization scoring are shared out and gathered,
and the main process alone writes the output directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import config_to_dict
from rlhfkit.critiques.mix import with_critiques
from rlhfkit.data.preference_io import FeedbackData, read_feedback_files
from rlhfkit.data.records import FeedbackRecord, ValidationReport, require_valid, responses_of
from rlhfkit.models.reward_model import (ENSEMBLE_CONFIG, REWARD_CONFIG, RewardEnsemble, RewardModel,
                                         RewardModelError)
from rlhfkit.reward.batching import assign_bootstrap_weights, attach_likelihoods, encode_records
from rlhfkit.reward.config import RewardTrainConfig
from rlhfkit.reward.ensemble_eval import METRIC, ensemble_confidence_metric
from rlhfkit.reward.evaluation import EvalReport, plot_reliability
from rlhfkit.reward.selection import (fit_likelihood_alone, heldout_loss, likelihood_alone_loss,
                                      likelihood_weight_loss, refit_likelihood_weight, split_by_prompt,
                                      unit_head_weights)
from rlhfkit.reward.sharding import check_batch_size, sharded_evaluation, sharded_scores
from rlhfkit.reward.trainer import RewardTrainer, StepHook, TrainSummary
from rlhfkit.utils.checkpoint import atomic_write_dir, atomic_write_json
from rlhfkit.utils.distributed import World, barrier, current_world, init_world, refuse_sharding_engines
from rlhfkit.utils.progress import console
from rlhfkit.utils.precision import disable_dropout, enable_gradient_checkpointing
from rlhfkit.utils.runtime import configure_threads, pick_device, pick_dtype, seed_everything
from rlhfkit.utils.tracking import Tracker

logger = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """Where the trained model is and what training and evaluation measured."""

    model_dir: Path
    summaries: list[TrainSummary]
    evaluation: EvalReport | None
    reports: list[ValidationReport] = field(default_factory=list)


def split_records(records: Sequence[FeedbackRecord], fraction: float, seed: int
                  ) -> tuple[list[FeedbackRecord], list[FeedbackRecord]]:
    """Deterministic (train, held-out) split; at least one record stays on each side when possible."""
    if fraction <= 0 or len(records) < 2:
        return list(records), []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = min(len(records) - 1, max(1, round(fraction * len(records))))
    held_out = set(order[:held])
    return ([r for i, r in enumerate(records) if i not in held_out],
            [r for i, r in enumerate(records) if i in held_out])


def build_model(config: RewardTrainConfig, seed: int, device: torch.device, member: int | None = None) -> RewardModel:
    """A fresh reward model on ``config.model``'s trunk, or a saved reward model to keep training.

    ``config.model`` may also be a saved :class:`RewardEnsemble`: member ``member`` of an ensemble
    being trained (``ensemble_size`` members) continues from the saved member of the same index.
    """
    path = Path(config.model)
    if path.is_dir() and (path / ENSEMBLE_CONFIG).is_file():
        path = ensemble_member_dir(path, member, config.ensemble_size)
    if path.is_dir() and (path / REWARD_CONFIG).is_file():
        model = RewardModel.from_pretrained(path)
        model.settings.max_length = config.max_length
    elif path.is_dir() and _is_sequence_classifier_dir(path):
        model = RewardModel.from_pretrained(path)
    else:
        model = RewardModel.from_trunk(config.model, num_heads=config.num_heads, max_length=config.max_length,
                                       seed=seed, pooling=config.pooling, likelihood=config.likelihood,
                                       likelihood_model=config.likelihood_model)
        if config.head_init_std is not None and model.head is not None:
            model.reset_head(config.head_init_std)
    model.settings.min_prompt_tokens = config.min_prompt_tokens
    if config.disable_dropout:
        disable_dropout(model.backbone)
    if config.gradient_checkpointing and not enable_gradient_checkpointing(model.backbone):
        logger.warning("%s does not support gradient checkpointing; training without it", config.model)
    return model.to(device)


def check_head_settings(config: RewardTrainConfig) -> None:
    """Refuse a negative head init std, heads that could never differ, or a non-positive head learning rate,
    before any work."""
    if config.head_init_std is not None and not config.head_init_std >= 0:
        raise ValueError(f"head_init_std must be >= 0 (or null), got {config.head_init_std}")
    if config.head_init_std == 0 and config.num_heads > 1 and not config.bootstrap:
        raise ValueError(f"num_heads={config.num_heads} with bootstrap=false and head_init_std=0 would train "
                         "identical heads (same start, same data): set head_init_std > 0 or bootstrap=true")
    if config.head_lr is not None and not config.head_lr > 0:
        raise ValueError(f"head_lr must be > 0 (or null for optim.lr), got {config.head_lr}")


def ensemble_member_dir(directory: Path, member: int | None, ensemble_size: int) -> Path:
    """The saved member that member ``member`` (None: the only model) of ``ensemble_size`` warm-starts from.

    Raises :class:`RewardModelError` naming ``directory`` when the ensemble has another size.
    """
    names = json.loads((directory / ENSEMBLE_CONFIG).read_text(encoding="utf-8"))["members"]
    if ensemble_size != len(names):
        raise RewardModelError(
            f"model {directory} is a reward-model ensemble of {len(names)} members: warm-start it with "
            f"ensemble_size={len(names)} (each member continues from its own), or start from one member "
            f"such as {directory / names[0]} (got ensemble_size={ensemble_size})")
    return directory / names[member or 0]


def _is_sequence_classifier_dir(path: Path) -> bool:
    try:
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return False
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def load_data(config: RewardTrainConfig) -> tuple[list[FeedbackRecord], list[int], list[FeedbackRecord],
                                                  list[ValidationReport]]:
    """Training records with their source numbers, held-out records and the validation reports."""
    scale = tuple(config.rating_scale) if config.rating_scale else None
    data: FeedbackData = with_critiques(read_feedback_files(config.data, default_scale=scale) if config.data else None,
                                        config.critiques, config.critique_encoder, config.critique_min_confidence,
                                        config.seed)
    reports = [data.report]
    require_valid(data.records, data.report)
    if config.eval_data:
        held = read_feedback_files(config.eval_data, default_scale=scale)
        reports.append(held.report)
        return data.records, data.numbers, held.records, reports
    numbered = list(zip(data.records, data.numbers))
    train_pairs, held_pairs = split_records(numbered, config.eval_fraction, config.seed)
    if held_pairs:
        console.print(f"holding out {config.eval_fraction:.0%} of --data for evaluation ({len(held_pairs)} records, "
                      f"training on {len(train_pairs)}): pass --eval-data to choose the evaluation set")
    else:
        console.print("no evaluation: --data is not split (eval_fraction is 0 or too few records) and no "
                      "--eval-data was given")
    return [r for r, _ in train_pairs], [n for _, n in train_pairs], [r for r, _ in held_pairs], reports


FEW_REFERENCE_RESPONSES = 32


def fit_normalization(model: RewardModel, records: Sequence[FeedbackRecord], limit: int, seed: int,
                      world: World | None = None) -> None:
    """Store each head's mean/std of rewards over up to ``limit`` distinct reference responses in the model.

    Few references give a noisy std that can blow normalized scores up (near-identical responses
    give a std near 0), so fewer than ``FEW_REFERENCE_RESPONSES`` are reported in the log.
    """
    pairs = sorted({(r.prompt, t) for r in records for t in responses_of(r)})
    random.Random(seed).shuffle(pairs)
    pairs = pairs[: max(2, limit)]
    if len(pairs) < 2:
        return
    if len(pairs) < min(limit, FEW_REFERENCE_RESPONSES):
        logger.warning("reward normalization from only %d distinct responses: normalized scores may be badly "
                       "scaled (more feedback, or a larger normalization_samples, helps)", len(pairs))
    rewards = sharded_scores(model, [p for p, _ in pairs], [t for _, t in pairs], world or World(), per_head=True)
    model.set_normalization(rewards)


def train_one(config: RewardTrainConfig, train_records: Sequence[FeedbackRecord], numbers: Sequence[int],
              held_out: Sequence[FeedbackRecord], *, member_seed: int, bootstrap: bool, member: int | None = None,
              on_step: StepHook | None = None) -> tuple[RewardModel, TrainSummary, ValidationReport]:
    """Train one model (possibly with several heads; ``member`` of an ensemble) in ``config.output_dir``.

    Returns it unsaved. Normalization statistics come from held-out and training responses together
    (location and scale only, so the training ones do no harm and keep the estimate stable).
    """
    seed_everything(member_seed)
    world = current_world()
    device = process_device(config.device, world)
    dtype = pick_dtype(device, config.dtype)
    model = build_model(config, member_seed, device, member)
    if not member and model.settings.max_length < config.max_length:
        console.print(f"max_length {config.max_length} capped at the model's {model.settings.max_length} "
                      "(its context length)")
    encoded, truncation = encode_records(train_records, model.tokenizer, max_length=model.settings.max_length,
                                         eos_id=model.tokenizer.eos_token_id if model.settings.append_eos else None,
                                         min_prompt_tokens=config.min_prompt_tokens,
                                         ordinal=config.loss.rating_loss == "ordinal", numbers=numbers)
    if not member and (truncation.problems or truncation.notes.get("truncated but kept")):
        console.print(truncation_line(truncation, model.settings.max_length, config.min_prompt_tokens))
        if truncation.problems:
            console.print("\n".join(truncation.lines()[1:]))
    if not encoded:
        raise ValueError("no training records remain after truncation\n" + truncation.summary())
    if model.frozen_likelihood is not None:
        attach_likelihoods(encoded, train_records, model.frozen_likelihood.score)
    kept, selection = split_by_prompt(encoded, [train_records[r.index].prompt for r in encoded],
                                      config.early_stopping_fraction, member_seed)
    selection_set = unit_head_weights([encoded[i] for i in selection], model.num_heads)
    encoded = [encoded[i] for i in kept]
    if selection_set and not member:
        console.print(f"early stopping: {len(selection_set)} training records ({config.early_stopping_fraction:.0%} "
                      f"of their prompts) held out to keep the step with the lowest held-out loss, training on "
                      f"{len(encoded)} (early_stopping_fraction=0 turns this off)")
    if bootstrap:
        assign_bootstrap_weights(encoded, model.num_heads, member_seed, groups=[
            train_records[r.index].prompt for r in encoded] if config.bootstrap_unit == "prompt" else None)
    separate_likelihood = config.likelihood_fit == "separate" and _likelihood_weight(model) is not None
    if separate_likelihood:
        _likelihood_weight(model).requires_grad_(False)
    autocast = dtype if dtype != torch.float32 else None  # CPU autocast too: bf16 matmuls on avx512_bf16 CPUs

    def select() -> float:
        return heldout_loss(model, selection_set, config.loss, config.batch_size, device, trainer.thresholds_by_key())

    def evaluate() -> dict[str, float]:
        report = sharded_evaluation(model, held_out, world, resamples=0, seed=member_seed)
        return {f"eval/{name}": metric.value for name, metric in report.metrics.items()}

    tracker = Tracker(Path(config.output_dir) / "logs", report_to=config.report_to, config=config_to_dict(config),
                      enabled=world.is_main)
    try:
        trainer = RewardTrainer(model, config, encoded, tracker=tracker, device=device, autocast_dtype=autocast,
                                evaluate=evaluate if held_out else None, world=world,
                                select=select if selection_set else None)
        summary = trainer.train(on_step=on_step)
        if summary.best_step is not None:
            best = dict(summary.heldout_losses)[summary.best_step]
            console.print(f"early stopping{'' if member is None else f' (member {member})'}: kept step "
                          f"{summary.best_step} of {summary.steps} (held-out loss {best:.4f})")
        model.settings.ordinal_thresholds = trainer.ordinal_cut_points() or None
        head = model.head
        alone = (likelihood_alone_loss(model, [*encoded, *selection_set], config.loss, config.batch_size, device)
                 if separate_likelihood else None)
        if alone is not None:
            per_nat = fit_likelihood_alone(head, alone, limit=LIKELIHOOD_WEIGHT_LIMIT)
            console.print(f"likelihood weight fitted alone on the training pairs: {per_nat:.3f} reward per nat")
            if abs(per_nat) > 0.99 * LIKELIHOOD_WEIGHT_LIMIT:
                console.print("the likelihood orders every training pair (or nearly): its weight stopped at the "
                              f"bound, {LIKELIHOOD_WEIGHT_LIMIT:g} per nat; check the frozen LM did not see the "
                              "preferences, or use likelihood_fit=joint")
        elif selection_set and _likelihood_weight(model) is not None and model.num_heads == 1:
            loss_at = likelihood_weight_loss(model, selection_set, config.loss, config.batch_size, device,
                                             trainer.thresholds_by_key())
            before, after = refit_likelihood_weight(head, loss_at)
            console.print(f"likelihood weight refit on the held-out slice: {before:.3f} -> {after:.3f} reward per nat")
        elif separate_likelihood:
            console.print("likelihood weight left at 0: likelihood_fit=separate fits it on pairs or rankings, and "
                          "there were none (likelihood_fit=joint learns it from the other kinds)")
    finally:
        tracker.close()
    fit_normalization(model, [*held_out, *train_records], config.normalization_samples, member_seed, world)
    return model, summary, truncation


LIKELIHOOD_WEIGHT_LIMIT = 100.0  # reward per nat: a separate fit that reaches it means the pairs are separable


def _likelihood_weight(model: RewardModel) -> torch.nn.Parameter | None:
    """The head's weight on a likelihood, when it reads one."""
    return getattr(model.head, "likelihood_weight", None)


def process_device(requested: str, world: World) -> torch.device:
    """The configured device; with several processes on CUDA, GPU ``LOCAL_RANK`` for this one."""
    device = pick_device(requested)
    if device.type == "cuda" and device.index is None and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def process_threads(requested: int | None, world: World) -> int | None:
    """CPU threads for this process: the configured count, else the cores shared among this machine's processes."""
    if requested is not None or not world.distributed or "RLHFKIT_THREADS" in os.environ:
        return requested
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world.world_size))
    return max(1, (os.cpu_count() or 1) // local)


def truncation_line(report: ValidationReport, max_length: int, min_prompt_tokens: int) -> str:
    """One console line saying how many training records were truncated, and how."""
    cut = report.notes.get("truncated but kept", 0) + report.dropped
    return (f"{cut} of {report.total} training records exceed {max_length} tokens: cut to fit (the prompt keeps "
            f"at least its last {min_prompt_tokens} tokens, the response its beginning); {report.dropped} skipped "
            "because truncation removed the difference between their responses")


def remove_empty_dirs(root: Path) -> None:
    """Delete ``root`` and the directories under it that hold no file (a failed run leaves no empty shell)."""
    if not root.is_dir():
        return
    for directory in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def save_model(model: RewardModel | RewardEnsemble, directory: Path) -> Path:
    """Write the final model atomically (a crash leaves the previous one)."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)

    return atomic_write_dir(directory, write)


def train_reward_model(config: RewardTrainConfig, on_step: StepHook | None = None) -> TrainOutcome:
    """Everything ``rlhfkit train-rm`` does; returns the final model directory and the metrics."""
    if not config.data and not config.critiques:
        raise ValueError("no training data: pass --data FILE or --critiques FILE (repeatable), or set them in the config")
    if (Path(config.model) / ENSEMBLE_CONFIG).is_file():
        ensemble_member_dir(Path(config.model), None, config.ensemble_size)  # a size mismatch fails before any work
    check_head_settings(config)
    refuse_sharding_engines("train-rm")
    world = init_world(pick_device(config.device))
    check_batch_size(config.batch_size, world)
    if not world.is_main:
        console.quiet = True
    configure_threads(process_threads(config.threads, world))
    output = Path(config.output_dir)
    train_records, numbers, held_out, reports = load_data(config)
    for report in reports:
        console.print("\n".join(report.lines()))
    created = world.is_main and not output.exists()
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
    try:
        return _train_and_evaluate(config, train_records, numbers, held_out, reports, on_step)
    except BaseException:
        if created:
            remove_empty_dirs(output)
        raise


def _train_and_evaluate(config: RewardTrainConfig, train_records: list[FeedbackRecord], numbers: list[int],
                        held_out: list[FeedbackRecord], reports: list[ValidationReport],
                        on_step: StepHook | None) -> TrainOutcome:
    """Train (one model or the ensemble's members), save, evaluate and write the reports into output_dir."""
    output = Path(config.output_dir)
    summaries, truncations = [], []
    if config.ensemble_size > 1:
        members = []
        for index in range(config.ensemble_size):
            member_config = dataclasses.replace(config, output_dir=str(output / "members" / f"member-{index}"),
                                                seed=config.seed + index)
            model, summary, truncation = train_one(member_config, train_records, numbers, held_out,
                                                   member_seed=member_config.seed, bootstrap=config.bootstrap,
                                                   member=index, on_step=on_step)
            members.append(model)
            summaries.append(summary)
            truncations.append(truncation)
        final: RewardModel | RewardEnsemble = RewardEnsemble(members)
    else:
        final, summary, truncation = train_one(config, train_records, numbers, held_out, member_seed=config.seed,
                                               bootstrap=config.bootstrap and config.num_heads > 1, on_step=on_step)
        summaries.append(summary)
        truncations.append(truncation)
    world = current_world()
    model_dir = output / "model"
    reports = reports + truncations[:1]
    if world.is_main:
        save_model(final, model_dir)
        atomic_write_json(output / "data_report.json", [r.to_dict() for r in reports])
    evaluation = None
    if held_out:
        evaluation = sharded_evaluation(final.eval(), held_out, world, resamples=config.bootstrap_samples,
                                        seed=config.seed)
        if world.is_main:
            gap = ensemble_confidence_metric(final, held_out, config.bootstrap_samples, config.seed)
            if gap is not None:
                evaluation.metrics[METRIC] = gap
            write_evaluation(evaluation, output)
            with Tracker(output / "logs", report_to=config.report_to) as tracker:
                tracker.log(evaluation.flat(), summaries[-1].steps)
    barrier()
    return TrainOutcome(model_dir, summaries, evaluation, reports)


def write_evaluation(evaluation: EvalReport, directory: Path) -> dict[str, Any]:
    """Write ``eval.json`` (and ``reliability.png`` when there are comparisons) into ``directory``."""
    payload = evaluation.to_dict()
    if evaluation.probabilities:
        payload["reliability_plot"] = str(plot_reliability(evaluation.probabilities, directory / "reliability.png"))
    atomic_write_json(directory / "eval.json", payload)
    return payload
