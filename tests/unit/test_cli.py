"""The ragtune CLI is wired: every command answers --help (fast: nothing runs)."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app


def test_every_command_has_help():
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    for command in (
        "refresh",
        "search",
        "stage",
        "server",
        "retrain",
        "tiny-model",
        "versions",
        "pull",
        "watch",
        "serve",
        "eval-retrieval",
        "ask",
        "compare",
    ):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command
