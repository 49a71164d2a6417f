"""The one sampling config (torch-free, so configs and ``--help`` load fast); samplers live in ``rl.rollout``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from rlhfkit.config import field


@dataclasses.dataclass
class SamplingConfig:
    """How to sample responses (the one sampling config of generate, the loop and the RL trainers)."""

    max_new_tokens: int = field(64, help="Most tokens generated per response.")
    temperature: float = field(1.0, help="Softmax temperature (> 0); log-probs use softmax(logits / temperature).")
    top_k: int = field(0, help="Sample only among the k most likely tokens (0 = off).")
    top_p: float = field(1.0, help="Nucleus sampling: smallest token set with this total probability (1 = off).")
    stop_strings: list[str] = field(default_factory=list, help="Stop a response when its text contains one of these.")
    min_new_tokens: int = field(0, help="EOS is blocked and stop strings are not checked before this many tokens.")
    do_sample: bool = field(True, help="False = greedy decoding (log-probs still use the temperature).")
    backend: Literal["hf", "cached", "cached-static", "compiled"] = field(
        "cached", help="Rollout backend: transformers generate, our KV-cache loop (dynamic or static cache), or "
                       "compiled: fixed shapes, torch.compile on CUDA and for CPU runs big enough to repay it.")
    seed_per_row: Literal["auto", "always", "never"] = field("auto", help="RL trainers: draw each response from its own "
                                                                "seed f(run seed, step, prompt, group member), so N "
                                                                "processes sample what one does (auto = on with several "
                                                                "processes; needs backend cached, cached-static or compiled).")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (use do_sample=False for greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}")
        if self.seed_per_row not in ("auto", "always", "never"):
            raise ValueError(f"seed_per_row must be auto, always or never, got {self.seed_per_row!r}")
        if any(not s for s in self.stop_strings):
            raise ValueError("stop_strings must not contain an empty string")

    def per_row_seeds(self, world_size: int) -> bool:
        """Whether responses are seeded per row (``auto``: when there are several processes)."""
        return self.seed_per_row == "always" or (self.seed_per_row == "auto" and world_size > 1)
