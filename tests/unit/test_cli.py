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


def test_exit_codes_are_distinct_and_docs_cli_lists_each_error_class():
    import re
    from pathlib import Path

    from tasks.core import errors

    classes = [errors.RagtuneError, *errors.RagtuneError.__subclasses__()]
    codes = {cls.__name__: cls.exit_code for cls in classes}
    assert len(set(codes.values())) == len(codes), f"two error classes share an exit code: {codes}"
    fixed = {errors.EXIT_UNEXPECTED, errors.EXIT_USAGE, errors.EXIT_INTERRUPTED}
    assert not fixed & set(codes.values())
    doc = (Path(__file__).resolve().parents[2] / "docs/cli.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| *(\w*) *\|", doc, flags=re.M))
    assert {name: int(code) for code, name in rows.items() if name} == codes
    assert fixed <= {int(code) for code in rows}


def test_an_expected_error_is_one_line_with_its_code_and_a_bug_keeps_its_traceback():
    import typer

    from flows.cli.common import friendly_errors
    from tasks.core.errors import GateFailed

    demo = typer.Typer()

    @demo.command()
    def run(bug: bool = False) -> None:
        with friendly_errors():
            if bug:
                raise ValueError("a bug")
            raise GateFailed("data quality gate failed [row 3]; fix the source")

    runner = CliRunner()
    expected = runner.invoke(demo, [])
    assert expected.exit_code == 5 and expected.output.strip().splitlines() == [
        "error: data quality gate failed [row 3]; fix the source"
    ]
    bug = runner.invoke(demo, ["--bug"])
    assert bug.exit_code == 1 and isinstance(bug.exception, ValueError), "a bug is not dressed up as a message"
