"""The simulated panel on edit tasks: honest members fix weak gold aspects, the others do not help.

Honest members rewrite with :class:`rlhfkit.feedback.editors.AspectEditor`. A spammer answers
"no change needed" or junk that the server accepts (the original's words shuffled); an adversarial
member makes the response worse on purpose (stutters, cuts it short, or scrambles it: whichever lowers
the utility most). Their rewrites
still become "rewrite over original" pairs and count as edits when candidates are ranked by how much they were
changed, so the reward model must tolerate some wrong pairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from rlhfkit.feedback.annotators import SimulatedAnnotator, TaskView


def edit_rng(seed: int, index: int, key: str) -> np.random.Generator:
    """A generator fixed by (panel seed, member, task key): answers do not depend on task order."""
    digest = hashlib.sha256(f"{seed}/{index}/{key}/edit".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def shuffled_words(response: str, rng: np.random.Generator) -> Optional[str]:
    """The response's words in a random order (None when that changes nothing)."""
    words = response.split()
    text = " ".join(words[i] for i in rng.permutation(len(words)))
    return None if text.strip() == response.strip() else text


def stutter(response: str, rng: np.random.Generator) -> str:
    """Every word said twice."""
    return " ".join(w for word in response.split() for w in (word, word))


def cut_short(response: str, rng: np.random.Generator) -> str:
    """The first two words, no sentence end."""
    return " ".join(response.split()[:2]).rstrip(".!?")


DAMAGES = (stutter, cut_short, shuffled_words)


def worsen(member: SimulatedAnnotator, prompt: str, response: str, rng: np.random.Generator) -> Optional[str]:
    """An adversarial rewrite: of the damages, the one the member likes most by its inverted utility, kept only
    when it beats the original by that measure, i.e. lowers the utility (None otherwise)."""
    best: Optional[tuple[float, str]] = None
    for damage in DAMAGES:
        text = damage(response, rng)
        if text is None or not text.strip() or text.strip() == response.strip():
            continue
        value = member.perceived(prompt, text)
        if best is None or value > best[0]:
            best = (value, text)
    return best[1] if best is not None and best[0] > member.perceived(prompt, response) else None


@dataclass
class EditPanelMember:
    """A panel member whose edit answers follow its role; every other task kind is answered by the member."""

    member: SimulatedAnnotator

    @property
    def name(self) -> str:
        """The member's name (its role suffix included)."""
        return self.member.name

    def decide(self, task: TaskView) -> dict[str, Any]:
        """Honest: the editor's rewrite; spammer: unchanged or shuffled words; adversarial: a worse text."""
        profile = self.member.profile
        if task.kind != "edit" or not (profile.spammer or profile.adversarial):
            return self.member.decide(task)
        rng = edit_rng(self.member.seed, self.member.index, task.key)
        original = task.items[0].text
        if profile.spammer:
            text = shuffled_words(original, rng) if rng.random() < 0.5 else None
        else:
            text = worsen(self.member, task.prompt, original, rng)
        return {"unchanged": True} if text is None else {"text": text}
