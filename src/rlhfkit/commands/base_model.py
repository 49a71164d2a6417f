"""``rlhfkit base-model``: build the built-in base model once (cached), then show what it is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import fail

HELP = """Build the built-in tiny GPT-2 if needed (one time, a few minutes on 2 CPU cores), then print
its path, training recipe, build time and a few sampled completions.

Example: rlhfkit base-model --samples 5
"""


def sample_prompts(n: int, seed: int) -> list[str]:
    """Demo prompts cycling through the corpus tasks: review, review, question, review, passage..."""
    from rlhfkit.models import corpus

    reviews = iter(corpus.demo_prompts(n, seed))
    questions = iter(doc.prompt for doc in corpus.qa_examples(n, seed))
    passages = iter(doc.prompt for doc in corpus.summary_examples(n, seed))
    order = ("review", "review", "qa", "review", "summary")
    sources = {"review": reviews, "qa": questions, "summary": passages}
    return [next(sources[order[i % len(order)]]) for i in range(n)]


def sample_completions(model_dir: Path, prompts: list[str], *, seed: int, max_new_tokens: int = 64) -> list[str]:
    """Plain ancestral samples (temperature 1, no top-k/p) from the model in ``model_dir``, EOS-cut."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.models.builtin import quiet_transformers

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(**batch, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in output[:, batch["input_ids"].shape[1]:]]


def _print_report(path: Path, info: dict[str, Any], prompts: list[str], completions: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from rlhfkit.models.corpus import sentiment_score

    console = Console()
    recipe = info["recipe"]
    table = Table(title="rlhfkit built-in base model", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("path", str(path))
    table.add_row("model", f"GPT-2, {recipe['n_layer']} layers x {recipe['n_embd']} wide, {recipe['n_head']} heads, "
                           f"context {recipe['n_positions']}, {info['parameters']:,} parameters")
    table.add_row("tokenizer", f"byte-level BPE, {info['vocab_size']} tokens (eos <|endoftext|>, pad <pad>)")
    table.add_row("corpus", f"{info['corpus_documents']:,} generated documents, {info['corpus_tokens']:,} tokens "
                            "(reviews, questions, passages)")
    table.add_row("training", f"{recipe['steps']} AdamW steps x {recipe['batch_size']} documents, lr {recipe['lr']} "
                              f"cosine, {info['trained_tokens']:,} tokens, {info['threads']} threads")
    table.add_row("loss", f"train {info['final_loss']:.3f} (from {info['first_loss']:.2f}), "
                          f"held-out {info['eval_loss']:.3f} nats/token")
    table.add_row("build time", f"{info['build_seconds']:.0f} s")
    console.print(table)
    for prompt, completion in zip(prompts, completions):
        console.print(f"[bold]{prompt}[/][green]{completion}[/]  [dim](sentiment {sentiment_score(completion):+.2f})[/]",
                      highlight=False, markup=True)


def base_model(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even when a cached copy exists.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache root (default: $RLHFKIT_CACHE or the user cache dir).")] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=0, help="How many sampled completions to show.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed for prompts and sampling.")] = 0,
) -> None:
    """Build (once) and describe the built-in base model, with sampled completions."""
    from rich.markup import escape

    from rlhfkit.models.builtin import ensure_builtin_model, read_info
    from rlhfkit.utils.runtime import configure_threads

    configure_threads()
    try:
        path = ensure_builtin_model(cache_dir, force=rebuild)
    except OSError as exc:
        fail(f"cannot build the built-in model under {cache_dir or 'the cache dir'}: {exc}")
    prompts = sample_prompts(samples, seed)
    completions = sample_completions(path, prompts, seed=seed) if prompts else []
    _print_report(path, read_info(path), [escape(p) for p in prompts], [escape(c) for c in completions])


def register(app: typer.Typer) -> None:
    """Add ``base-model`` to the CLI."""
    app.command("base-model", help=HELP)(base_model)
