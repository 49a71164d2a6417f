"""``rlhfkit generate``: sample responses from any causal LM (``builtin`` by default) and show them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import fail

HELP = """Sample responses to prompts and print them as a table (or JSON lines with --json).

Example: rlhfkit generate --prompt "Review: the film was" --num 4 --temperature 0.8 --stop "."
"""


def _read_prompts(prompts: list[str] | None, prompts_file: Path | None) -> list[str]:
    from rlhfkit.rl.prompts import PromptError, read_prompts

    collected = list(prompts or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            fail(f"--prompts-file: {prompts_file} does not exist")
        try:
            collected += read_prompts(prompts_file)
        except PromptError as exc:
            fail(str(exc))
    if not collected:
        fail("give at least one --prompt or a --prompts-file with one prompt per line")
    return collected


def _print_table(rollout: Any, num: int, model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rlhfkit generate · {model}", show_lines=True)
    for column in ("#", "prompt", "response", "tokens", "end", "mean logprob"):
        table.add_column(column, overflow="fold")
    lengths = rollout.response_mask.sum(-1).tolist()
    for index, (prompt, response) in enumerate(zip(rollout.prompts, rollout.responses)):
        n = max(int(lengths[index]), 1)
        mean_logprob = float(rollout.logprobs[index].sum()) / n
        end = "stop" if bool(rollout.finished[index]) else "length"
        table.add_row(f"{index // num + 1}.{index % num + 1}", prompt, response, str(lengths[index]), end,
                      f"{mean_logprob:.3f}")
    Console().print(table)


def generate(
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", "-p", help="Prompt text (repeatable).")] = None,
    prompts_file: Annotated[Optional[Path], typer.Option("--prompts-file", help="Text file, one prompt per line.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, or 'builtin'.")] = "builtin",
    num: Annotated[int, typer.Option("--num", "-n", min=1, help="Samples per prompt.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens per response.")] = 48,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Softmax temperature (> 0).")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Top-k filtering (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (1 = off).")] = 1.0,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Stop string (repeatable).")] = None,
    min_new_tokens: Annotated[int, typer.Option("--min-new-tokens", min=0, help="Ignore EOS/stops before this.")] = 0,
    greedy: Annotated[bool, typer.Option("--greedy", help="Greedy decoding instead of sampling.")] = False,
    sampler: Annotated[str, typer.Option("--sampler", help="hf | cached | cached-static | compiled.")] = "hf",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16, float16.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per sample instead of a table.")] = False,
) -> None:
    """Sample responses to prompts from a causal LM and print them."""
    import torch

    from rlhfkit.models.loading import ModelError, load_causal_lm, load_tokenizer
    from rlhfkit.rl.rollout import SamplingParams, make_sampler
    from rlhfkit.utils.runtime import configure_threads, seed_everything

    prompts = _read_prompts(prompt, prompts_file)
    configure_threads()
    seed_everything(seed)
    try:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                stop_strings=list(stop or []), min_new_tokens=min_new_tokens, do_sample=not greedy)
        backend = make_sampler(sampler)
        tokenizer = load_tokenizer(model)
        policy = load_causal_lm(model, device=device, dtype=dtype)
        repeated = [text for text in prompts for _ in range(num)]
        rollout = backend.sample(policy, tokenizer, repeated, params, generator=torch.Generator().manual_seed(seed))
    except (ModelError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        lengths = rollout.response_mask.sum(-1).tolist()
        for index, (text, response) in enumerate(zip(rollout.prompts, rollout.responses)):
            record = {"prompt": text, "response": response, "tokens": int(lengths[index]),
                      "finished": bool(rollout.finished[index]), "logprob": float(rollout.logprobs[index].sum())}
            typer.echo(json.dumps(record, ensure_ascii=False))
        return
    _print_table(rollout, num, model)


def register(app: typer.Typer) -> None:
    """Add ``rlhfkit generate`` to the CLI."""
    app.command("generate", help=HELP)(generate)
