"""Test data and project edits: the sample instructions for the tiny-model tests, and a params.yaml setter.

The shipped default (RAFT over the index with the packaged SmolLM2) is exercised by the slow real-model tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

INSTRUCTIONS = {"format": "auto", "sources": ["data/sample/train/instructions.jsonl"], "max_length": 512}
INSTRUCTION_OVERRIDES = [f"dataset.{key}={value}".replace("'", "") for key, value in INSTRUCTIONS.items()]


def set_params(params: Path, **dotted: Any) -> None:
    """Set keys like versioning__enabled=True (a__b = a.b) in a project's params.yaml.

    A key that params.yaml does not hold is an error: an edit that silently matches nothing would let a test
    pass while testing the defaults."""
    tree = yaml.safe_load(params.read_text())
    for key, value in dotted.items():
        *sections, last = key.split("__")
        node = tree
        for section in sections:
            node = node[section]
        if last not in node:
            raise KeyError(f"{params}: no key {'.'.join([*sections, last])} to set")
        node[last] = value
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
