"""Line-numbered JSONL parsing: the one reader behind every user-supplied JSONL file (documents, QA sets,
training examples), so a bad line is always reported as FILE:LINE with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tasks.core.errors import SourceError


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; a line that is not JSON yields its ValueError
    instead, so the caller decides whether that is fatal (a training file) or recorded (a document source)."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as exc:
            yield lineno, exc


def json_objects(lines: Iterable[str], where: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) per line; anything else stops with `where:LINE: reason` and the fix."""
    for lineno, value in parse_lines(lines):
        if isinstance(value, ValueError):
            msg = getattr(value, "msg", str(value))
            raise SourceError(
                f"{where}:{lineno}: not valid JSON ({msg}). Each line must be one JSON object; fix or remove that line."
            )
        if not isinstance(value, dict):
            raise SourceError(f"{where}:{lineno}: expected a JSON object, got {type(value).__name__}.")
        yield lineno, value
