"""The `ragtune` command line: one typer app (common.py), its commands grouped by area.

kb.py     refresh, search, eval-retrieval
answer.py ask, compare
train.py  retrain, watch, tiny-model
ops.py    stage, versions, pull, serve, server
"""

from flows.cli import answer, kb, ops, train  # noqa: F401  (importing an area registers its commands)
from flows.cli.common import app


def main() -> None:
    app()
