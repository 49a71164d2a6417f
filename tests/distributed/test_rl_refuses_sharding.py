"""The RL commands run data parallel only: an FSDP or DeepSpeed launch is refused in one line, not run unsharded."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app


@pytest.mark.parametrize(("variable", "engine"), [("ACCELERATE_USE_FSDP", "FSDP"),
                                                  ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
@pytest.mark.parametrize("command", ["grpo", "dpo"])
def test_rl_command_refuses_sharding_engine(command: str, variable: str, engine: str,
                                            monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(variable, "true")
    result = CliRunner().invoke(app, [command, "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert f"does not support {engine}" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
