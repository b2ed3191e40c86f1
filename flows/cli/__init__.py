"""The `ragtune` command line: one typer app (common.py), its commands grouped by area.

kb.py     refresh, search, eval-retrieval
answer.py ask, compare
train.py  retrain, watch, tiny-model
ops.py    stage, versions, pull, serve, server
"""

import sys

from flows.cli import answer, kb, ops, train  # noqa: F401  (importing an area registers its commands)
from flows.cli.common import app

GLOBAL_FLAGS = ("--verbose", "-v", "--debug")


def main() -> None:
    """`ragtune refresh --verbose` works like `ragtune --verbose refresh`: the global flags move to the front."""
    args = sys.argv[1:]
    cut = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:cut] if a in GLOBAL_FLAGS]
    rest = [a for i, a in enumerate(args) if i >= cut or a not in GLOBAL_FLAGS]
    app(args=flags + rest, prog_name="ragtune")
