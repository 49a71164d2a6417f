"""The loop's state on disk: which round, which of its phases are done, and where things are.

``RUN_DIR/state.json`` is rewritten atomically (``rlhfkit.utils.checkpoint.atomic_write_json``)
after every phase, so a kill at any moment leaves the state of the last finished phase; a
restart redoes at most the phase in flight (phases themselves resume from their own
checkpoints: reward and policy trainers, and the feedback database for collection).

Round 0 only evaluates the base policy; rounds 1..N run every phase of :data:`ROUND_PHASES`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.utils.checkpoint import atomic_write_json

STATE_FILE = "state.json"
STATE_VERSION = 1

ROUND_PHASES: tuple[str, ...] = ("generate", "select", "campaign", "collect", "aggregate", "reward", "adversarial",
                                 "sft", "policy", "evaluate", "compare", "checkpoint")
LATER_PHASES: tuple[str, ...] = ("adversarial", "sft", "compare")
"""Phases added after runs were recorded without them; an old state gets them marked done where a later phase is."""
BASELINE_PHASES: tuple[str, ...] = ("evaluate", "checkpoint")


class StateError(RuntimeError):
    """A state file that cannot be used; the message names the file and the problem."""


def phases_of(round_index: int) -> tuple[str, ...]:
    """The phases of round ``round_index`` in order (round 0 = baseline evaluation only)."""
    return BASELINE_PHASES if round_index == 0 else ROUND_PHASES


@dataclass
class LoopState:
    """Progress of one run; every field is plain JSON."""

    run_id: str = ""
    round: int = 0
    done: list[str] = field(default_factory=list)
    base_model: str | None = None
    policy: str | None = None
    reward_model: str | None = None
    campaign_ids: list[int] = field(default_factory=list)
    global_step: int = 0
    best_round: int | None = None
    stopped: str | None = None
    finished: bool = False
    version: int = STATE_VERSION

    def next_phase(self) -> str | None:
        """The first phase of the current round not yet done (None when the round is complete)."""
        for phase in phases_of(self.round):
            if phase not in self.done:
                return phase
        return None

    def is_done(self, phase: str) -> bool:
        """Whether ``phase`` of the current round has finished."""
        return phase in self.done

    def complete(self, phase: str) -> None:
        """Mark ``phase`` of the current round finished; phases must finish in order."""
        expected = self.next_phase()
        if phase != expected:
            raise StateError(f"round {self.round}: cannot finish phase {phase!r}, the next one is {expected!r}")
        self.done.append(phase)

    def advance(self) -> None:
        """Move to the next round once every phase of this one is done."""
        if self.next_phase() is not None:
            raise StateError(f"round {self.round} still has phase {self.next_phase()!r} to run")
        self.round += 1
        self.done = []

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<state>") -> LoopState:
        """Inverse of :meth:`to_dict`, checking the version and the phase names."""
        if not isinstance(data, dict):
            raise StateError(f"{source}: expected a JSON object")
        if data.get("version") != STATE_VERSION:
            raise StateError(f"{source}: state version {data.get('version')!r}, this rlhfkit reads {STATE_VERSION}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise StateError(f"{source}: unknown field(s) {unknown}")
        state = cls(**data)
        if state.round > 0:
            state.done = with_later_phases(state.done)
        valid = phases_of(state.round)
        bad = [p for p in state.done if p not in valid]
        if bad or state.done != list(valid[: len(state.done)]):
            raise StateError(f"{source}: round {state.round} lists phases {state.done}, expected a prefix of {list(valid)}")
        return state


def with_later_phases(done: list[str]) -> list[str]:
    """``done`` of a round recorded before the :data:`LATER_PHASES` existed, with each one inserted where
    a phase after it is already done (they were no-ops then, as they are unless configured)."""
    out = list(done)
    for phase in LATER_PHASES:
        after = ROUND_PHASES[ROUND_PHASES.index(phase) + 1:]
        later = [p for p in out if p in after]
        if phase not in out and later:
            out.insert(out.index(later[0]), phase)
    return out


def state_path(run_dir: str | Path) -> Path:
    """Where the state of the run in ``run_dir`` lives."""
    return Path(run_dir) / STATE_FILE


def load_state(run_dir: str | Path) -> LoopState | None:
    """The saved state of ``run_dir``, or None when the run has not started."""
    path = state_path(run_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: unreadable state ({exc})") from exc
    return LoopState.from_dict(data, str(path))


def save_state(run_dir: str | Path, state: LoopState) -> None:
    """Write the state atomically (readers and restarts see the old or the new state, never half)."""
    atomic_write_json(state_path(run_dir), state.to_dict())


@dataclass(frozen=True)
class RunPaths:
    """Every path of the run directory layout (rlhfkit/eval/run_layout.md) plus the loop's own files."""

    root: Path

    def round_dir(self, index: int) -> Path:
        """``rounds/round-XXX`` (3 digits, zero-padded)."""
        return self.root / "rounds" / f"round-{index:03d}"

    @property
    def feedback_dir(self) -> Path:
        """Feedback server state: SQLite database, session key, tokens of the simulated panel."""
        return self.root / "feedback"

    @property
    def loop_config(self) -> Path:
        """The resolved loop config as YAML (what a restart compares against)."""
        return self.root / "loop.yaml"

    def candidates(self, index: int) -> Path:
        """Candidate responses of a round (JSONL)."""
        return self.round_dir(index) / "candidates.jsonl"

    def comparisons(self, index: int) -> Path:
        """The pairs chosen for annotation (JSON)."""
        return self.round_dir(index) / "comparisons.json"

    def feedback_records(self, index: int) -> Path:
        """Aggregated feedback of every campaign so far (the reward model's training data)."""
        return self.round_dir(index) / "feedback.jsonl"

    def reward_dir(self, index: int) -> Path:
        """The reward trainer's output directory of a round."""
        return self.round_dir(index) / "reward"

    def policy_dir(self, index: int) -> Path:
        """The policy trainer's output directory of a round (checkpoints, final/, metrics)."""
        return self.round_dir(index) / "policy"
