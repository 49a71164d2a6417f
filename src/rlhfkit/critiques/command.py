"""``rlhfkit encode-critiques``: free-text critiques to weighted rating records that train-rm reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlhfkit.commands.common import fail
from rlhfkit.critiques.records import ENCODER_HELP


def encode_critiques(
    critiques: Annotated[list[str], typer.Option("--critiques", "-c", help="Critique JSONL (prompt, response, critique[, rating, scale]). Repeatable.")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Output JSONL of rating records on [-1, 1].")],
    encoder: Annotated[str, typer.Option("--encoder", "-e", help=ENCODER_HELP)] = "rules",
    min_confidence: Annotated[float, typer.Option("--min-confidence", help="Drop encodings at or below this confidence.")] = 0.0,
    save_encoder: Annotated[Optional[Path], typer.Option("--save-encoder", help="With --encoder learned: write it (.npz).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the learned encoder's held-out split.")] = 0,
) -> None:
    """Encode critiques into rating records weighted by the encoder's confidence (train-rm --data reads them)."""
    from rlhfkit.critiques.base import CritiqueError, read_items
    from rlhfkit.critiques.records import encode_items, load_encoder
    from rlhfkit.data.records import record_to_dict
    from rlhfkit.utils.atomic_file import atomic_write_lines

    try:
        items = [item for path in critiques for item in read_items(path)]
        model, fit_line = load_encoder(encoder, items, seed)
        outcome = encode_items(items, model, min_confidence, source=", ".join(critiques))
    except CritiqueError as exc:
        fail(str(exc))
    if fit_line:
        typer.echo(fit_line)
    if save_encoder is not None:
        if not hasattr(model, "save"):
            fail(f"--save-encoder: the {model.name} encoder has nothing to save (use --encoder learned)")
        typer.echo(f"wrote encoder {model.save(save_encoder)}")  # type: ignore[attr-defined]
    typer.echo("\n".join(outcome.report.lines()))
    atomic_write_lines(out, (json.dumps(record_to_dict(r), ensure_ascii=False) + "\n" for r in outcome.records))
    typer.echo(f"wrote {len(outcome.records)} rating records to {out}")
