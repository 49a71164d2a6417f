"""End-of-round evaluation: sample the policy on the held-out prompts and measure it.

The same eval prompts and sampling seed every round, so rounds are comparable and round 0 (the
base policy) is the win-rate baseline. Measured: gold reward, the round's reward-model score
(proxy) and its heads' disagreement, KL(policy || base) on the policy's own samples (k3
estimator, per sequence), win rate against the base policy by gold, distinct-n, length, and
BLEU/ROUGE when the task has references (``rlhfkit.eval.evaluate.evaluate_responses``); then what
the collapse watch and the report read: each gold aspect's mean, the share of responses that
mention their prompt's subject, the share also given to other prompts, and the largest share of
prompts given one same response (``collapse_metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlhfkit.eval.evaluate import evaluate_responses
from rlhfkit.eval.metrics import duplicate_share, kl_from_logprobs, top_response_share
from rlhfkit.loop.candidates import prompt_messages
from rlhfkit.loop.scoring import head_scores, load_scorer
from rlhfkit.rl.rollout import Rollout
from rlhfkit.tasks.base import Task

EVAL_SEED_OFFSET = 7919


def eval_prompts(task: Task, n: int, per_prompt: int, seed: int) -> list[str]:
    """The held-out prompts of every round, each repeated ``per_prompt`` times."""
    return [p for p in task.prompts(n, seed=seed, split="eval") for _ in range(per_prompt)]


def collapse_metrics(task: Task, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
    """``eval/aspect/<name>`` (mean of each gold aspect), ``eval/on_topic``, ``eval/duplicate_share`` and
    ``eval/top_response_share`` of one policy's eval responses."""
    out = {f"eval/aspect/{name}": sum(scores) / len(scores)
           for name, scores in task.aspect_scores(prompts, responses).items() if scores}
    mentions = task.mentions_subject(prompts, responses)
    out["eval/on_topic"] = sum(mentions) / len(mentions) if mentions else 0.0
    out["eval/duplicate_share"] = duplicate_share(prompts, responses)
    out["eval/top_response_share"] = top_response_share(prompts, responses)
    return out


@torch.no_grad()
def policy_kl(policy: torch.nn.Module, reference: torch.nn.Module, rollout: Rollout) -> dict[str, float]:
    """KL summary (``kl/mean`` per sequence, k3) of policy vs reference on the policy's own samples."""
    from rlhfkit.rl.logprobs import token_logprobs

    ids, mask, start = rollout.sequences, rollout.attention_mask, rollout.response_start
    logprobs = token_logprobs(policy, ids, mask, start)
    ref_logprobs = token_logprobs(reference, ids, mask, start)
    return kl_from_logprobs(logprobs, ref_logprobs, rollout.response_mask.float())


def evaluate_policy(task: Task, policy_path: str, base_model: str, prompts: Sequence[str], *, max_new_tokens: int,
                    seed: int, sampler_name: str, device: Any = None, reward_model: str | None = None,
                    baseline_responses: Sequence[str] | None = None, batch_size: int = 64
                    ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics (flat ``eval/*`` names) and samples (prompt, response, gold, proxy) of one policy."""
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer
    from rlhfkit.rl.rollout import SamplingParams, make_sampler

    tokenizer = load_tokenizer(policy_path)
    policy = load_causal_lm(policy_path, device=device)
    reference = policy if policy_path == base_model else load_causal_lm(base_model, device=device)
    sampler = make_sampler(sampler_name)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    generator = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed + EVAL_SEED_OFFSET)
    responses: list[str] = []
    kl_parts: list[dict[str, float]] = []
    weights: list[int] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        rollout = sampler.sample(policy, tokenizer, chunk, params, generator=generator)
        responses.extend(rollout.responses)
        if reference is not policy:
            kl_parts.append(policy_kl(policy, reference, rollout))
            weights.append(len(chunk))
    kl = ({"kl/mean": sum(p["kl/mean"] * w for p, w in zip(kl_parts, weights)) / sum(weights)}
          if kl_parts else {"kl/mean": 0.0})
    proxy, ensemble = None, None
    if reward_model is not None:
        heads = head_scores(load_scorer(reward_model, device=device), list(prompts), responses)
        proxy = heads.mean(0).tolist()
        ensemble = heads.tolist() if heads.shape[0] > 1 else None
    metrics = evaluate_responses(task, list(prompts), responses, baseline_responses=baseline_responses,
                                 proxy_scores=proxy, ensemble_scores=ensemble, kl=kl)
    metrics.update(collapse_metrics(task, prompts, responses))
    gold = task.gold_reward(list(prompts), responses)
    samples = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        sample: dict[str, Any] = {"prompt": prompt, "response": response}
        turns = prompt_messages(prompt)
        if turns is not None:
            sample["prompt_messages"] = turns
        if gold is not None:
            sample["gold"] = gold[i]
        if proxy is not None:
            sample["proxy"] = proxy[i]
        samples.append(sample)
    return metrics, samples

