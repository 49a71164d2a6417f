"""Reward-model work split over processes: batch checks, record shards, and scoring shared out.

Training shards each global micro-batch contiguously (:func:`local_records`); scoring for the
evaluation and the normalization statistics gives each process a contiguous part of the distinct
(prompt, response) texts and gathers the scores, so every process ends with the same full set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from rlhfkit.data.records import FeedbackRecord
from rlhfkit.reward.evaluation import EvalReport, evaluate_scores, score_records
from rlhfkit.utils.distributed import World, broadcast_object, gather_objects, split_range

T = TypeVar("T")


def check_batch_size(batch_size: int, world: World) -> None:
    """Refuse a global batch that does not split evenly over the processes (one-line error)."""
    if batch_size % world.world_size:
        raise ValueError(f"batch_size {batch_size} does not divide over {world.world_size} processes: batch_size is "
                         f"the global batch, choose a multiple of {world.world_size}")


def local_records(records: Sequence[T], world: World) -> list[T]:
    """This process's contiguous part of one global micro-batch (an epoch's short last batch may split unevenly)."""
    return [records[i] for i in split_range(len(records), world)]


def sharded_scores(model: Any, prompts: Sequence[str], responses: Sequence[str], world: World,
                   per_head: bool = False, batch_size: int = 32) -> torch.Tensor:
    """``model.score_texts`` over all pairs, each process scoring its contiguous part; the same tensor everywhere."""
    part = split_range(len(prompts), world)
    local = (model.score_texts([prompts[i] for i in part], [responses[i] for i in part], per_head=per_head,
                               batch_size=batch_size) if len(part) else None)
    if not world.distributed:
        return local if local is not None else torch.zeros(0)
    pieces = [p for p in gather_objects(None if local is None else local.cpu()) if p is not None]
    return torch.cat(pieces) if pieces else torch.zeros(0)


def sharded_record_scores(model: Any, records: Sequence[FeedbackRecord], world: World,
                          batch_size: int = 32) -> list[np.ndarray]:
    """Rewards of every response of every record (each distinct text scored once, by one process)."""
    return score_records(model, records, scorer=lambda prompts, responses: sharded_scores(
        model, prompts, responses, world, batch_size=batch_size))


def sharded_evaluation(model: Any, records: Sequence[FeedbackRecord], world: World, resamples: int, seed: int
                       ) -> EvalReport:
    """:func:`~rlhfkit.reward.evaluation.evaluate_model` over the whole set, scored in parts by all processes.

    The main process computes the metrics (bootstrap included) and sends the report to the others.
    """
    scores = sharded_record_scores(model, records, world)
    report = None
    if world.is_main:
        settings = getattr(getattr(model, "members", [model])[0], "settings", None)
        report = evaluate_scores(records, scores, resamples=resamples, seed=seed,
                                 ordinal_thresholds=getattr(settings, "ordinal_thresholds", None))
    return broadcast_object(report)
