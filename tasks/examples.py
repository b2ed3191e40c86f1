"""Training examples: read JSONL in the common formats, normalise them to one shape, repair text.

Formats (one per run; `auto` picks by the fields of the first record):
- instruction: {"instruction", "input"?, "output"}      -> user turn + assistant turn
- chat:        {"messages": [{"role", "content"}, ...]}  -> trained on assistant turns only
- text:        {"text"}                                  -> continued pretraining (e.g. data/clean/documents.jsonl)
- labelled:    {"text", "label"}                         -> sequence classification
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import ftfy

from tasks.errors import SourceError

ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    example_id: str             # "<file name>:<line>"
    format: str
    messages: list[dict] = field(default_factory=list)   # instruction/chat
    text: str = ""                                       # text/labelled
    label: str | None = None                             # labelled
    problem: str = ""                                    # why the record is unusable ("" = fine)

    @property
    def content_hash(self) -> str:
        body = json.dumps([self.messages, self.text, self.label], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


def detect_format(record: dict, path: Path) -> str:
    if "messages" in record:
        return "chat"
    if "instruction" in record or "output" in record:
        return "instruction"
    if "text" in record and "label" in record:
        return "labelled"
    if "text" in record:
        return "text"
    raise SourceError(
        f"{path}: line 1 has fields {sorted(record)}; cannot tell the format. Expected instruction/output, "
        "messages, text or text+label, or set dataset.format in params.yaml.")


def _fix(value) -> str:
    return unicodedata.normalize("NFC", ftfy.fix_text(value)).strip() if isinstance(value, str) else ""


def to_example(record: dict, fmt: str, example_id: str, system_prompt: str | None) -> Example:
    """Normalise one record; a record missing what its format needs is kept with `problem` set for the gate."""
    ex = Example(example_id=example_id, format=fmt)
    if fmt == "instruction":
        prompt = _fix(record.get("instruction"))
        extra = _fix(record.get("input"))
        answer = _fix(record.get("output"))
        if not prompt or not answer:
            ex.problem = "instruction and output must be non-empty strings"
        ex.messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": f"{prompt}\n\n{extra}" if extra else prompt},
            {"role": "assistant", "content": answer}]
    elif fmt == "chat":
        msgs = record.get("messages")
        if not isinstance(msgs, list) or not msgs:
            ex.problem = "messages must be a non-empty list of {role, content}"
            return ex
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not _fix(m.get("content")):
                ex.problem = f"each message needs role in {list(ROLES)} and non-empty content (got {str(m)[:60]})"
                return ex
            ex.messages.append({"role": m["role"], "content": _fix(m["content"])})
        if not any(m["role"] == "assistant" for m in ex.messages):
            ex.problem = "no assistant message: nothing to train on"
        if system_prompt and ex.messages[0]["role"] != "system":
            ex.messages.insert(0, {"role": "system", "content": system_prompt})
    else:
        ex.text = _fix(record.get("text"))
        if not ex.text:
            ex.problem = "text must be a non-empty string"
        if fmt == "labelled":
            label = record.get("label")
            ex.label = str(label).strip() if label is not None else ""
            if not ex.label:
                ex.problem = "label must be present and non-empty"
    return ex


def read_examples(root: Path, sources: list[str], fmt: str, system_prompt: str | None) -> tuple[list[Example], str]:
    """All records of all source files, in order. Malformed JSON is an error naming file and line."""
    from tasks.config import resolve_path

    examples: list[Example] = []
    for source in sources:
        path = resolve_path(root, source)
        if not path.is_file():
            raise SourceError(f"dataset.sources: {path} is not a file. Point it at a JSONL training file "
                              "(e.g. data/sample/train/instructions.jsonl).")
        with path.open(encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise SourceError(f"{path}:{lineno}: not valid JSON ({exc.msg}). Each line must be one "
                                      "JSON object; fix or remove that line.") from None
                if not isinstance(record, dict):
                    raise SourceError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}.")
                if fmt == "auto":
                    fmt = detect_format(record, path)
                examples.append(to_example(record, fmt, f"{path.name}:{lineno}", system_prompt))
    if fmt == "auto":
        raise SourceError(f"dataset.sources {sources}: no records found. Add training examples to the file(s).")
    return examples, fmt


def data_version(root: Path, sources: list[str]) -> dict[str, str]:
    """md5 of each source file, the hash DVC 3 records for it in dvc.lock (`dvc get` finds it by that)."""
    from tasks.config import resolve_path

    out = {}
    for s in sources:
        h = hashlib.md5()
        with resolve_path(root, s).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[s] = h.hexdigest()
    return out
