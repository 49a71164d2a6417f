"""The arithmetic of a log-softmax over a chunk of logit rows, shared by the fused log-prob functions.

Forward: ``log p(y) = z_y - logsumexp(z)`` and the entropy, keeping only (m,) statistics; backward: the
gradient with respect to the logits rebuilt from those statistics and the logits themselves
(:class:`rlhfkit.rl.logprobs.FusedLogprobs`, :class:`rlhfkit.models.head_logprobs.HeadLogprobs`).
"""

from __future__ import annotations

import torch


def chunk_statistics(z: torch.Tensor, tokens: torch.Tensor, logprobs: torch.Tensor, lse: torch.Tensor,
                     entropy: torch.Tensor | None) -> None:
    """For float32 scaled logits ``z`` (m, V) and their tokens (m,): write ``log softmax(z)[token]`` into
    ``logprobs``, ``logsumexp(z)`` into ``lse`` and, when given, the entropy into ``entropy`` (each (m,))."""
    logp = torch.log_softmax(z, dim=-1)
    token = tokens[:, None]
    picked = logp.gather(1, token).squeeze(1)
    logprobs.copy_(picked)
    lse.copy_(z.gather(1, token).squeeze(1) - picked)
    if entropy is not None:
        entropy.copy_(-(logp.exp() * logp.clamp_min_(torch.finfo(torch.float32).min)).sum(-1))


def chunk_gradient(z: torch.Tensor, tokens: torch.Tensor | None, lse: torch.Tensor, entropy: torch.Tensor | None,
                   grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None, temperature: float,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient (m, V) float32 with respect to the *unscaled* logits of a chunk whose scaled logits are
    ``z``: ``(onehot(y) - p) g_lp / T - p (log p + H) g_H / T``, written into ``out`` when given (``z`` may be
    reused as scratch). ``entropy`` is needed only with ``grad_entropy``; one of the two gradients is given.
    ``tokens`` None leaves out the ``onehot(y) g_lp`` term (for a caller whose chunk holds only some columns)."""
    logp = z - lse[:, None]
    p = torch.exp(logp, out=out) if out is not None else logp.exp()
    if grad_entropy is None:
        assert grad_logprobs is not None
        p.mul_(-grad_logprobs[:, None])
    else:
        assert entropy is not None
        coef = logp.clamp_min_(torch.finfo(torch.float32).min).add_(entropy[:, None])
        coef.mul_(grad_entropy[:, None])
        if grad_logprobs is not None:
            coef.add_(grad_logprobs[:, None])
        p.mul_(coef).neg_()
    if grad_logprobs is not None and tokens is not None:
        p.scatter_add_(1, tokens[:, None], grad_logprobs[:, None])
    if temperature != 1.0:
        p.div_(temperature)
    return p
