"""The ``rlhfkit`` command line: a typer app; every command is a thin call into the library."""

from __future__ import annotations

import importlib

import typer

from rlhfkit import __version__

app = typer.Typer(
    name="rlhfkit",
    help="The whole RLHF loop: collect human feedback, train reward models, optimize the policy, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="markdown",
)

COMMAND_MODULES = ("base_model", "generate", "sft", "reward", "rl", "feedback", "loop", "evaluate")


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module_name = f"rlhfkit.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(app)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    """rlhfkit command line."""
    if version:
        typer.echo(__version__)
        raise typer.Exit()


_register_commands()

if __name__ == "__main__":
    app()
