"""``rlhfkit ppo``, ``rlhfkit grpo`` (``--algo grpo|rloo|reinforce``), ``rlhfkit rloo``, ``rlhfkit reinforce``
and ``rlhfkit dpo``: thin wrappers over :mod:`rlhfkit.rl.runner`.

Precedence: defaults < --config YAML < --set key=value < flags. ``--help`` lists every config key.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from rlhfkit.commands.common import ConfigOption, ReportToOption, SetOption, config_keys, fail

ModelOption = Annotated[Optional[str], typer.Option("--model", "-m", help="Policy: 'builtin' (default), a save_pretrained dir, or a cached hub id.")]
RewardModelOption = Annotated[Optional[list[str]], typer.Option("--reward-model", help="Reward model directory (repeat for an ensemble).")]
RewardFnOption = Annotated[Optional[list[str]], typer.Option("--reward-fn", help="Reward function module:function or file.py:function, f(prompts, responses) -> scores.")]
PromptsOption = Annotated[Optional[str], typer.Option("--prompts", help="Prompt file: .txt (one per line) or .jsonl with 'prompt'.")]
OutputOption = Annotated[Optional[str], typer.Option("--output-dir", "-o", help="Run directory (checkpoints, metrics, final model).")]
StepsOption = Annotated[Optional[int], typer.Option("--steps", help="Training steps.")]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --output-dir.")]
RecipeOption = Annotated[Optional[str], typer.Option("--recipe", help="exact (default: E[r] - beta KL(pi||ref)) or grpo-paper (Shao et al. 2024: k3 KL loss = forward KL, std scaling).")]
ResumeFromOption = Annotated[Optional[str], typer.Option("--resume-from", help="Continue from this checkpoint directory.")]


def _load(cls: Any, config: Any, set_: list[str] | None, flags: dict[str, Any]) -> Any:
    """Build the config from YAML, --set and the given flags (flags win)."""
    from rlhfkit.config import ConfigError, load_config, parse_overrides

    try:
        overrides = parse_overrides(set_ or [])
        for dotted, value in flags.items():
            if value is None:
                continue
            node = overrides
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return load_config(cls, config, overrides)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))


def _common_flags(model: str | None, prompts: str | None, output_dir: str | None, steps: int | None,
                  seed: int | None) -> dict[str, Any]:
    return {"run.model": model, "run.prompts": prompts, "run.output_dir": output_dir, "run.steps": steps,
            "run.seed": seed}


def _reward_flags(reward_model: list[str] | None, reward_fn: list[str] | None) -> dict[str, Any]:
    return {"reward.models": reward_model or None, "reward.functions": reward_fn or None}


def join_processes(device: str, command: str) -> Any:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group and keep the other processes quiet
    (only the main one prints and logs); one process: nothing to join."""
    import logging
    import os

    from rlhfkit.utils.distributed import World, init_world, refuse_sharding_engines

    refuse_sharding_engines(f"rlhfkit {command}")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    from rlhfkit.utils.runtime import pick_device

    world = init_world(pick_device(device))
    if not world.is_main:
        logging.getLogger("rlhfkit").setLevel(logging.ERROR)
    return world


def _run(train: Any, cfg: Any, report_to: str, resume: bool, resume_from: str | None) -> None:
    """Run ``train`` turning expected failures into one-line errors, then print a summary."""
    from rlhfkit.config import ConfigError
    from rlhfkit.data.records import NoValidRecordsError
    from rlhfkit.models.loading import ModelError
    from rlhfkit.models.reward_model import RewardModelError
    from rlhfkit.rl.checkpointing import CheckpointError
    from rlhfkit.rl.guard import TooManySkipsError
    from rlhfkit.rl.prompts import PromptError
    from rlhfkit.rl.rewards import RewardError
    from rlhfkit.utils.distributed import finish_world

    try:
        world = join_processes(cfg.run.device, getattr(cfg, "algo", "dpo"))
    except ValueError as exc:
        fail(str(exc))
    if hasattr(cfg, "objective") and world.is_main:
        typer.echo(f"{cfg.algo} objective: {cfg.objective()}")
    try:
        result = train(cfg, report_to=report_to or "tensorboard", resume=resume_from or resume)
    except (ConfigError, ModelError, RewardModelError, RewardError, PromptError, CheckpointError, NoValidRecordsError,
            TooManySkipsError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    finally:
        finish_world()
    if not world.is_main:
        return
    metrics = result.last_metrics
    shown = {k: metrics[k] for k in ("reward/mean", "kl/mean", "loss/policy", "loss/dpo", "rewards/accuracy")
             if k in metrics}
    resumed = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
    typer.echo(f"done: {result.steps} steps{resumed}; final model: {result.final_dir}; logs: {result.output_dir}")
    typer.echo("last step: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))


def ppo(model: ModelOption = None, reward_model: RewardModelOption = None, reward_fn: RewardFnOption = None,
        prompts: PromptsOption = None, output_dir: OutputOption = None, steps: StepsOption = None,
        seed: SeedOption = None, resume: ResumeOption = False, resume_from: ResumeFromOption = None,
        config: ConfigOption = None, set_: SetOption = None, report_to: ReportToOption = "tensorboard") -> None:
    """PPO with a value head or critic, per-token KL penalty, GAE (see --help for every key)."""
    from rlhfkit.rl.config import PPOConfig
    from rlhfkit.rl.runner import train_on_policy

    flags = {**_common_flags(model, prompts, output_dir or None, steps, seed), **_reward_flags(reward_model, reward_fn)}
    _run(train_on_policy, _load(PPOConfig, config, set_, flags), report_to, resume, resume_from)


def _policy_gradient(algo: str | None, model: str | None, reward_model: list[str] | None, reward_fn: list[str] | None,
                     prompts: str | None, output_dir: str | None, steps: int | None, seed: int | None, resume: bool,
                     resume_from: str | None, config: Any, set_: list[str] | None, report_to: str,
                     recipe: str | None = None) -> None:
    from rlhfkit.rl.config import PolicyGradientConfig
    from rlhfkit.rl.runner import train_on_policy

    flags = {**_common_flags(model, prompts, output_dir, steps, seed), **_reward_flags(reward_model, reward_fn),
             "algo": algo, "recipe": recipe}
    _run(train_on_policy, _load(PolicyGradientConfig, config, set_, flags), report_to, resume, resume_from)


def grpo(algo: Annotated[Optional[str], typer.Option("--algo", help="grpo (default), rloo or reinforce.")] = None,
         model: ModelOption = None, reward_model: RewardModelOption = None, reward_fn: RewardFnOption = None,
         prompts: PromptsOption = None, output_dir: OutputOption = None, steps: StepsOption = None,
         seed: SeedOption = None, resume: ResumeOption = False, resume_from: ResumeFromOption = None,
         recipe: RecipeOption = None, config: ConfigOption = None, set_: SetOption = None,
         report_to: ReportToOption = "tensorboard") -> None:
    """GRPO / RLOO / REINFORCE on groups of sampled completions (see --help for every key)."""
    _policy_gradient(algo, model, reward_model, reward_fn, prompts, output_dir, steps, seed, resume, resume_from,
                     config, set_, report_to, recipe)


def _fixed_algo(algo: str) -> Any:
    def command(model: ModelOption = None, reward_model: RewardModelOption = None, reward_fn: RewardFnOption = None,
                prompts: PromptsOption = None, output_dir: OutputOption = None, steps: StepsOption = None,
                seed: SeedOption = None, resume: ResumeOption = False, resume_from: ResumeFromOption = None,
                config: ConfigOption = None, set_: SetOption = None,
                report_to: ReportToOption = "tensorboard") -> None:
        _policy_gradient(algo, model, reward_model, reward_fn, prompts, output_dir, steps, seed, resume, resume_from,
                         config, set_, report_to)

    command.__doc__ = f"{algo.upper()}: same as `rlhfkit grpo --algo {algo}`."
    return command


def dpo(data: Annotated[Optional[str], typer.Option("--data", "-d", help="Preference data: pairwise/ranking JSONL, TRL prompt/chosen/rejected, CSV, HF dataset dir.")] = None,
        loss: Annotated[Optional[str], typer.Option("--loss", help="sigmoid (DPO, default) or ipo.")] = None,
        beta: Annotated[Optional[float], typer.Option("--beta", help="DPO beta.")] = None,
        model: ModelOption = None, output_dir: OutputOption = None, steps: StepsOption = None,
        seed: SeedOption = None, resume: ResumeOption = False, resume_from: ResumeFromOption = None,
        config: ConfigOption = None, set_: SetOption = None, report_to: ReportToOption = "tensorboard") -> None:
    """DPO / IPO on offline preference pairs, reference log-probs computed once (see --help)."""
    from rlhfkit.rl.config import DPOConfig
    from rlhfkit.rl.runner import train_dpo

    flags = {**_common_flags(model, None, output_dir, steps, seed), "data": data, "loss_type": loss, "beta": beta}
    _run(train_dpo, _load(DPOConfig, config, set_, flags), report_to, resume, resume_from)


def _help(intro: str, cls_name: str, objectives: bool = True) -> str:
    """Command help: intro, what each KL setting optimizes, and every config key (no torch imported)."""
    from rlhfkit.rl import config as rl_config
    from rlhfkit.rl.objectives import objective_table_text

    keys = "\n".join(f"- {line}" for line in config_keys(getattr(rl_config, cls_name)))
    table = ""
    if objectives:
        rows = "\n".join(f"- {line}" for line in objective_table_text().splitlines())
        table = ("\n\nWhat the objective settings optimize (defaults: KL in the reward with k1 = the exact "
                 "E[r] - beta KL(pi||ref); --recipe grpo-paper = k3 loss, std scaling, seq_mean):\n\n" + rows)
    return intro + table + "\n\nConfig keys (--set key=value):\n\n" + keys


def register(app: typer.Typer) -> None:
    """Add the policy-optimization commands to the ``rlhfkit`` app."""
    app.command("ppo", help=_help("PPO with a value head or critic, per-token KL penalty and GAE.", "PPOConfig"))(ppo)
    app.command("grpo", help=_help("GRPO / RLOO / REINFORCE on groups of completions (--algo).",
                                   "PolicyGradientConfig"))(grpo)
    app.command("rloo", help=_help("RLOO: same as `rlhfkit grpo --algo rloo`.", "PolicyGradientConfig"))(_fixed_algo("rloo"))
    app.command("reinforce", help=_help("REINFORCE: same as `rlhfkit grpo --algo reinforce`.",
                                        "PolicyGradientConfig"))(_fixed_algo("reinforce"))
    app.command("dpo", help=_help("DPO / IPO on offline preference pairs; reference log-probs computed once.",
                                  "DPOConfig", objectives=False))(dpo)
