"""`rlhfkit report` refuses directories that are not loop runs instead of writing an empty report."""

from __future__ import annotations

from typer.testing import CliRunner

from rlhfkit.cli import app


def test_report_refuses_a_trainer_run_directory(tmp_path) -> None:
    trainer_run = tmp_path / "ppo"
    trainer_run.mkdir()
    (trainer_run / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.1}\n')
    result = CliRunner().invoke(app, ["report", str(trainer_run)], terminal_width=200)
    assert result.exit_code != 0
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "not a run of `rlhfkit loop`" in message and "tensorboard --logdir" in message
    assert not (trainer_run / "report.html").exists()


def test_report_writes_html_for_a_loop_run(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "rounds" / "round-000").mkdir(parents=True)
    (run / "rounds" / "round-000" / "metrics.json").write_text('{"eval/gold_reward": 0.1}')
    result = CliRunner().invoke(app, ["report", str(run)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file() and str(run / "report.html") in result.output
