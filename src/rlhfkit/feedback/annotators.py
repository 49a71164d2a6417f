"""Simulated annotators: a panel that judges by a hidden utility with Bradley-Terry noise and biases.

Each member sees what a human sees (prompt, responses in displayed order, the rating scale) and answers
every task kind of the feedback API:
- pairwise: P(left) = sigmoid((u_left - u_right + position_bias) / temperature)   (Bradley & Terry 1952)
- binary:   P(good) = sigmoid((u - good_threshold) / temperature)
- rating:   ordered logit: level = number of cut-points below u + Logistic(0, temperature) noise
- ranking:  Plackett-Luce with weights exp(u / temperature), sampled by the Gumbel-max trick
            (sort u / T + Gumbel noise; Yellott 1977)
- edit:     the member's ``editor`` (e.g. rlhfkit.feedback.editors.AspectEditor) rewrites the response,
            or answers "no change needed" when it finds nothing to improve
where u = utility(prompt, response) + length_bias * len(response) / 100 (+ position_bias for the first
displayed item). Spammers answer uniformly at random; adversarial members invert their utility.
Randomness is drawn from a generator seeded by (panel seed, member, task key), so answers do not
depend on the order in which tasks arrive. `decide` is pure; `run_member`/`run_panel` drive members
through the HTTP API with `rlhfkit.feedback.client`.
"""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, Protocol

import numpy as np

if TYPE_CHECKING:
    from rlhfkit.feedback.client import FeedbackClient

Utility = Callable[[str, str], float]
Critic = Callable[[str, str, np.random.Generator], str]
"""(prompt, response, rng) -> a free-text critique (e.g. rlhfkit.critiques.simulated.AspectCritic)."""
Editor = Callable[[str, str, np.random.Generator], Optional[str]]
"""(prompt, response, rng) -> a rewrite of the response, or None for "no change needed"."""
TaskKind = Literal["pairwise", "rating", "ranking", "binary", "edit"]
TASK_KINDS: tuple[str, ...] = ("pairwise", "rating", "ranking", "binary", "edit")


@dataclass(frozen=True)
class TaskItem:
    """One displayed response: its sample id and text."""

    sample_id: int
    text: str


@dataclass(frozen=True)
class TaskView:
    """What an annotator is shown for one assignment; `items` are in displayed order."""

    key: str
    kind: str
    prompt: str
    items: tuple[TaskItem, ...]
    scale: tuple[float, float] | None = None

    @classmethod
    def from_assignment(cls, assignment: dict[str, Any]) -> TaskView:
        """Build from a `GET /campaigns/{cid}/next` body; the task id keys the randomness."""
        try:
            items = tuple(TaskItem(int(it["sample_id"]), str(it["text"])) for it in assignment["items"])
            scale = assignment.get("scale")
            return cls(key=f"task-{assignment['task_id']}", kind=str(assignment["kind"]),
                       prompt=str(assignment["prompt"]), items=items,
                       scale=(float(scale[0]), float(scale[1])) if scale else None)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"assignment {assignment.get('assignment_id')!r}: malformed field ({exc!r})") from exc


@dataclass(frozen=True)
class AnnotatorProfile:
    """How one simulated member judges; temperature 0 means a noiseless argmax."""

    name: str
    temperature: float = 1.0
    position_bias: float = 0.0
    length_bias: float = 0.0
    spammer: bool = False
    adversarial: bool = False
    rating_offset: float = 0.0
    tie_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not math.isfinite(self.temperature):
            raise ValueError(f"annotator {self.name!r}: temperature must be finite and >= 0, got {self.temperature}")
        if self.tie_margin < 0:
            raise ValueError(f"annotator {self.name!r}: tie_margin must be >= 0, got {self.tie_margin}")


@dataclass(frozen=True)
class RatingModel:
    """Maps utility to a rating scale: cut-points evenly spaced over utility_range, one per level step."""

    utility_range: tuple[float, float] = (-2.0, 2.0)
    good_threshold: float = 0.0

    def levels(self, scale: tuple[float, float]) -> np.ndarray:
        """Rating levels of a scale: integers lo..hi when both ends are integral, else 11 even steps."""
        lo, hi = scale
        if hi <= lo:
            raise ValueError(f"rating scale {scale} must have lo < hi")
        if float(lo).is_integer() and float(hi).is_integer():
            return np.arange(int(lo), int(hi) + 1, dtype=float)
        return np.linspace(lo, hi, 11)

    def cutpoints(self, n_levels: int) -> np.ndarray:
        """n_levels - 1 thresholds: the boundaries of equal slices of utility_range."""
        u_lo, u_hi = self.utility_range
        return np.linspace(u_lo, u_hi, n_levels + 1)[1:-1]


def _rng_for(seed: int, member: int, key: str) -> np.random.Generator:
    """A generator determined by (seed, member, task key) only."""
    digest = hashlib.sha256(f"{seed}/{member}/{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


@dataclass
class SimulatedAnnotator:
    """A panel member: a profile, the hidden utility, the rating model and a seed."""

    profile: AnnotatorProfile
    utility: Utility
    seed: int = 0
    index: int = 0
    rating_model: RatingModel = field(default_factory=RatingModel)
    critic: Critic | None = None
    editor: Editor | None = None

    @property
    def name(self) -> str:
        return self.profile.name

    def perceived(self, prompt: str, text: str) -> float:
        """Utility as this member perceives it: hidden utility (inverted if adversarial) + length bias."""
        u = float(self.utility(prompt, text))
        if not math.isfinite(u):
            raise ValueError(f"utility returned {u} for prompt {prompt[:40]!r}")
        if self.profile.adversarial:
            u = -u
        return u + self.profile.length_bias * len(text) / 100.0

    def _noisy_choice(self, logit: float, rng: np.random.Generator) -> bool:
        """True with probability sigmoid(logit / T); a hard threshold at T = 0 (ties broken at random)."""
        if self.profile.temperature == 0:
            return logit > 0 or (logit == 0 and rng.random() < 0.5)
        return bool(rng.random() < _sigmoid(logit / self.profile.temperature))

    def decide(self, task: TaskView) -> dict[str, Any]:
        """The answer body for `task` in the API's terms; with a critic, single-response answers add "critique"."""
        answer = self._answer(task)
        if self.critic is not None and not self.profile.spammer and task.kind in ("rating", "binary"):
            rng = _rng_for(self.seed, self.index, f"{task.key}/critique")
            answer["critique"] = self.critic(task.prompt, task.items[0].text, rng)
        return answer

    def _answer(self, task: TaskView) -> dict[str, Any]:
        """The answer body without a critique (pairwise choice, rating, order, label)."""
        rng = _rng_for(self.seed, self.index, task.key)
        kind = task.kind
        if kind not in TASK_KINDS:
            raise ValueError(f"task {task.key}: unknown kind {kind!r}")
        expected = {"pairwise": (2, 2), "rating": (1, 1), "binary": (1, 1), "ranking": (2, 10**6), "edit": (1, 1)}[kind]
        if not expected[0] <= len(task.items) <= expected[1]:
            raise ValueError(f"task {task.key}: {kind} task with {len(task.items)} responses")
        if kind == "edit":
            return self._edit(task, rng)
        if self.profile.spammer:
            return self._random_answer(task, rng)
        u = np.array([self.perceived(task.prompt, it.text) for it in task.items])
        if kind == "pairwise":
            diff = u[0] - u[1] + self.profile.position_bias
            if self.profile.tie_margin > 0 and abs(diff) < self.profile.tie_margin:
                return {"choice": "tie"}
            return {"choice": "left" if self._noisy_choice(diff, rng) else "right"}
        if kind == "binary":
            good = self._noisy_choice(u[0] - self.rating_model.good_threshold, rng)
            return {"label": "good" if good else "bad"}
        if kind == "rating":
            levels = self.rating_model.levels(self._scale(task))
            noise = rng.logistic(0.0, self.profile.temperature) if self.profile.temperature > 0 else 0.0
            level = int((self.rating_model.cutpoints(len(levels)) < u[0] + self.profile.rating_offset + noise).sum())
            return {"rating": float(levels[level])}
        u[0] += self.profile.position_bias
        if self.profile.temperature > 0:
            keys = u / self.profile.temperature + rng.gumbel(size=len(u))
        else:
            keys = u + rng.random(len(u)) * 1e-9  # argmax order; the jitter only breaks exact ties
        order = np.argsort(-keys, kind="stable")
        return {"order": [task.items[i].sample_id for i in order]}

    def _edit(self, task: TaskView, rng: np.random.Generator) -> dict[str, Any]:
        """An edit task's answer: the editor's rewrite, or "no change needed" (always, for spammers and
        adversarial members, who do not improve anything)."""
        if self.editor is None:
            raise ValueError(f"task {task.key}: an edit task needs a member with an editor (make_panel(editor=...))")
        if self.profile.spammer or self.profile.adversarial:
            return {"unchanged": True}
        original = task.items[0].text
        text = self.editor(task.prompt, original, rng)
        if text is None or text.strip() == original.strip():
            return {"unchanged": True}
        return {"text": text}

    @staticmethod
    def _scale(task: TaskView) -> tuple[float, float]:
        if task.scale is None:
            raise ValueError(f"task {task.key}: rating task without a scale")
        return task.scale

    def _random_answer(self, task: TaskView, rng: np.random.Generator) -> dict[str, Any]:
        """A spammer's answer: uniform over the valid answers (ties and skips excluded)."""
        if task.kind == "pairwise":
            return {"choice": "left" if rng.random() < 0.5 else "right"}
        if task.kind == "binary":
            return {"label": "good" if rng.random() < 0.5 else "bad"}
        if task.kind == "rating":
            levels = self.rating_model.levels(self._scale(task))
            return {"rating": float(levels[rng.integers(len(levels))])}
        return {"order": [task.items[i].sample_id for i in rng.permutation(len(task.items))]}


def make_panel(
    utility: Utility,
    n: int = 10,
    *,
    spammer_fraction: float = 0.0,
    temperature: float | Sequence[float] = 1.0,
    position_bias: float = 0.0,
    length_bias: float = 0.0,
    adversarial: int = 0,
    seed: int = 0,
    rating_model: RatingModel | None = None,
    name_prefix: str = "sim",
    critic: Critic | None = None,
    editor: Editor | None = None,
) -> list[SimulatedAnnotator]:
    """A panel of n members; round(n * spammer_fraction) spammers and `adversarial` inverted members.

    Which members are spammers is drawn from `seed`; `temperature` is shared or given per member.
    Names are "<prefix>-<i>" with a role suffix ("-spam", "-adv") so a test can tell them apart.
    """
    if n < 1:
        raise ValueError(f"make_panel: n must be >= 1, got {n}")
    if not 0.0 <= spammer_fraction <= 1.0:
        raise ValueError(f"make_panel: spammer_fraction must be in [0, 1], got {spammer_fraction}")
    temps = [float(temperature)] * n if isinstance(temperature, (int, float)) else [float(t) for t in temperature]
    if len(temps) != n:
        raise ValueError(f"make_panel: {len(temps)} temperatures for {n} members")
    n_spam = int(round(n * spammer_fraction))
    if n_spam + adversarial > n:
        raise ValueError(f"make_panel: {n_spam} spammers + {adversarial} adversarial exceed {n} members")
    roles = ["spam"] * n_spam + ["adv"] * adversarial + ["ok"] * (n - n_spam - adversarial)
    roles = [roles[i] for i in np.random.default_rng(seed).permutation(n)]
    members = []
    for i, role in enumerate(roles):
        suffix = "" if role == "ok" else f"-{role}"
        profile = AnnotatorProfile(f"{name_prefix}-{i}{suffix}", temperature=temps[i], position_bias=position_bias,
                                   length_bias=length_bias, spammer=role == "spam", adversarial=role == "adv")
        members.append(SimulatedAnnotator(profile, utility, seed=seed, index=i,
                                          rating_model=rating_model or RatingModel(), critic=critic, editor=editor))
    return members


class Decider(Protocol):
    """Anything that answers tasks: a simulated member, an AI judge."""

    @property
    def name(self) -> str: ...

    def decide(self, task: TaskView) -> dict[str, Any]: ...


@dataclass
class Acknowledged:
    """A submission the server acknowledged (201 created or 200 replay)."""

    annotator: str
    assignment_id: int
    task_id: int
    annotation_id: int
    idempotency_key: str
    answer: dict[str, Any]
    replayed: bool


def run_member(
    client: FeedbackClient,
    member: Decider,
    campaign_id: int,
    *,
    max_tasks: int | None = None,
    stop: threading.Event | None = None,
    time_spent_ms: int = 1000,
    on_ack: Callable[[Acknowledged], None] | None = None,
) -> list[Acknowledged]:
    """Answer tasks through the API until none is left, `max_tasks` are done or `stop` is set.

    Each answer is submitted under a fresh idempotency key that the client reuses on retries;
    `on_ack` is called with every acknowledgement as it arrives.
    """
    done: list[Acknowledged] = []
    while (max_tasks is None or len(done) < max_tasks) and not (stop and stop.is_set()):
        assignment = client.next_assignment(campaign_id)
        if assignment is None:
            break
        view = TaskView.from_assignment(assignment)
        answer = dict(member.decide(view))
        critique = answer.pop("critique", None)
        key = uuid.uuid4().hex
        reply = client.submit(int(assignment["assignment_id"]), answer, idempotency_key=key,
                              critique=critique, time_spent_ms=time_spent_ms)
        ack = Acknowledged(member.name, int(assignment["assignment_id"]), int(assignment["task_id"]),
                           int(reply["annotation_id"]), key, answer, bool(reply.get("replayed", False)))
        done.append(ack)
        if on_ack is not None:
            on_ack(ack)
    return done


def invite_panel(admin: FeedbackClient, members: Sequence[Decider], campaign_ids: Sequence[int], *,
                 workers: int = 8) -> list[FeedbackClient]:
    """Invite each member as an annotator of the campaigns (`workers` requests at a time); returns one
    client per member, in member order, each with its own token."""
    def invite(member: Decider) -> FeedbackClient:
        return admin.with_token(admin.create_annotator(member.name, list(campaign_ids))["token"])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(invite, members))


def run_panel(
    clients: Sequence[FeedbackClient],
    members: Sequence[Decider],
    campaign_id: int,
    *,
    max_tasks: int | None = None,
    stop: threading.Event | None = None,
    sequential: bool = False,
) -> dict[str, list[Acknowledged]]:
    """Run every member concurrently (one thread and one client each); returns acknowledgements by name.

    ``sequential`` instead takes turns in member order, one task each, so the order of requests (and,
    with a server started with an assignment seed, every choice) is the same run after run.
    An exception in any member is re-raised after all threads finish.
    """
    if len(clients) != len(members):
        raise ValueError(f"run_panel: {len(clients)} clients for {len(members)} members")
    if sequential:
        done: dict[str, list[Acknowledged]] = {m.name: [] for m in members}
        active = list(zip(clients, members))
        while active and not (stop and stop.is_set()):
            for client, member in list(active):
                answered = run_member(client, member, campaign_id, max_tasks=1, stop=stop)
                done[member.name].extend(answered)
                if not answered or (max_tasks is not None and len(done[member.name]) >= max_tasks):
                    active.remove((client, member))
        return done
    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        futures = [pool.submit(run_member, c, m, campaign_id, max_tasks=max_tasks, stop=stop)
                   for c, m in zip(clients, members)]
        results = [f.result() for f in futures]
    return {m.name: r for m, r in zip(members, results)}
