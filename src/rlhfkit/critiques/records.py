"""Encoded critiques as rating records weighted by confidence, and the encoder named by a spec string."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.critiques.base import CritiqueEncoder, CritiqueError, CritiqueItem, read_items
from rlhfkit.data.records import Rating, ValidationReport

SCALE = (-1.0, 1.0)
NOT_CONFIDENT = "critique encoded with too little confidence"
ENCODER_HELP = ("rules (the shipped lexicon), rules:FILE (your lexicon), learned (fit on the critiques that "
                "came with a rating), learned:FILE.npz, module:function or file.py:function (a judge), or a "
                "reward-model directory (scores critique-conditioned text)")


@dataclass
class EncodeOutcome:
    """The rating records, what was dropped, and the learned encoder's fit report line (if any)."""

    records: list[Rating]
    numbers: list[int]
    report: ValidationReport
    fit_line: str = ""


def load_encoder(spec: str, items: Sequence[CritiqueItem] = (), seed: int = 0) -> tuple[CritiqueEncoder, str]:
    """The encoder a spec names (see ``ENCODER_HELP``) and, for a freshly learned one, its fit report line."""
    from rlhfkit.critiques.judge import FunctionJudge, RewardModelJudge
    from rlhfkit.critiques.learned import LearnedEncoder, fit_learned
    from rlhfkit.critiques.rules import RulesEncoder

    kind, _, arg = spec.partition(":")
    if kind == "rules":
        return RulesEncoder.from_file(arg or None), ""
    if kind == "learned" and arg:
        return LearnedEncoder.load(arg), ""
    if kind == "learned":
        encoder, report = fit_learned(items, seed=seed)
        return encoder, report.line()
    if Path(spec).is_dir():
        return RewardModelJudge(spec), ""
    if ":" in spec:
        return FunctionJudge(spec), ""
    raise CritiqueError(f"critique encoder {spec!r}: use {ENCODER_HELP}")


def encode_items(items: Sequence[CritiqueItem], encoder: CritiqueEncoder, min_confidence: float = 0.0,
                 source: str = "critiques") -> EncodeOutcome:
    """One rating on [-1, 1] per critique, weight = the encoder's confidence; below ``min_confidence`` (or 0) dropped."""
    encoded = encoder.encode([i.critique for i in items], [i.prompt for i in items], [i.response for i in items])
    if len(encoded) != len(items):
        raise CritiqueError(f"critique encoder {encoder.name}: {len(encoded)} encodings for {len(items)} critiques")
    report = ValidationReport(source=f"{source} (encoder {encoder.name})", total=len(items))
    records, numbers = [], []
    for index, (item, code) in enumerate(zip(items, encoded), start=1):
        number = item.number or index
        if code.confidence <= min_confidence or code.confidence <= 0.0:
            report.add(NOT_CONFIDENT, number, f"confidence {code.confidence:.2f} for {item.critique[:40]!r}")
            continue
        records.append(Rating(item.prompt, item.response, code.score, SCALE,
                              annotator=item.annotator or f"critique:{encoder.name}", weight=round(code.confidence, 6)))
        numbers.append(number)
    report.valid = len(records)
    return EncodeOutcome(records, numbers, report)


def encode_files(paths: Sequence[str], spec: str, min_confidence: float = 0.0, seed: int = 0) -> EncodeOutcome:
    """Read critique files, build the encoder (a learned one fits on their rated critiques) and encode them all."""
    items = [item for path in paths for item in read_items(path)]
    if not items:
        raise CritiqueError(f"critique files {', '.join(paths)}: no critiques")
    encoder, fit_line = load_encoder(spec, items, seed)
    outcome = encode_items(items, encoder, min_confidence, source=", ".join(str(p) for p in paths))
    outcome.fit_line = fit_line
    return outcome
