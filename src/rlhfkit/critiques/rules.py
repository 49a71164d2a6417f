"""The rules encoder: a small lexicon of weighted regular expressions in a text file a user edits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.critiques.base import CritiqueError, Encoded

DEFAULT_RULES = Path(__file__).with_name("default_rules.txt")
ANY_ASPECT = "-"


@dataclass(frozen=True)
class Rule:
    """One line of a rules file: a weight added to the score when ``pattern`` matches."""

    weight: float
    aspect: str
    pattern: re.Pattern[str]


def parse_rules(text: str, source: str = "<rules>") -> list[Rule]:
    """Rules from ``<weight> <aspect or -> <regex>`` lines ('#' comments and blank lines skipped)."""
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 2)
        where = f"{source} line {number}"
        if len(parts) != 3:
            raise CritiqueError(f"{where}: expected '<weight> <aspect or -> <regex>', got {line.strip()!r}")
        try:
            weight = float(parts[0])
        except ValueError:
            raise CritiqueError(f"{where}: weight {parts[0]!r} is not a number") from None
        if parts[1] != ANY_ASPECT and not parts[1].isidentifier():
            raise CritiqueError(f"{where}: aspect {parts[1]!r} must be an identifier or '-'")
        try:
            pattern = re.compile(parts[2].strip(), re.IGNORECASE)
        except re.error as exc:
            raise CritiqueError(f"{where}: bad regular expression ({exc})") from None
        rules.append(Rule(weight, parts[1], pattern))
    if not rules:
        raise CritiqueError(f"{source}: no rules")
    return rules


class RulesEncoder:
    """Score = sum of matching rule weights (first match per aspect) clipped to [-1, 1]."""

    def __init__(self, rules: Sequence[Rule], name: str = "rules") -> None:
        self.rules = list(rules)
        self.name = name

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> RulesEncoder:
        """Load a rules file (default: the shipped ``default_rules.txt``)."""
        path = Path(path) if path is not None else DEFAULT_RULES
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CritiqueError(f"rules file {path}: cannot read ({exc.strerror or exc})") from exc
        return cls(parse_rules(text, str(path)), name="rules" if path == DEFAULT_RULES else f"rules:{path.name}")

    def encode_one(self, critique: str) -> Encoded:
        """Encode one critique; confidence = 1 - 0.5 ** (rules that counted)."""
        aspects: dict[str, float] = {}
        total, counted = 0.0, 0
        for rule in self.rules:
            if rule.aspect != ANY_ASPECT and rule.aspect in aspects:
                continue
            if rule.pattern.search(critique):
                total += rule.weight
                counted += 1
                if rule.aspect != ANY_ASPECT:
                    aspects[rule.aspect] = rule.weight
        return Encoded(max(-1.0, min(1.0, total)), 1.0 - 0.5 ** counted, aspects)

    def encode(self, critiques: Sequence[str], prompts: Sequence[str] = (),
               responses: Sequence[str] = ()) -> list[Encoded]:
        """Encode each critique (the rules read only the critique's text)."""
        return [self.encode_one(c) for c in critiques]
