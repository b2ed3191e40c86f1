"""Training examples: read JSONL in the common formats, normalise them to one shape, repair text.

Formats (one per run; `auto` picks by the fields of the first record):
- instruction: {"instruction", "input"?, "output"}      -> user turn + assistant turn
- chat:        {"messages": [{"role", "content"}, ...]}  -> trained on assistant turns only
- text:        {"text"}                                  -> continued pretraining (e.g. data/clean/documents.jsonl)
- labelled:    {"text", "label"}                         -> sequence classification
Built from the knowledge base (`auto` picks `qa` for rows with a `question`; see tasks/train/kb_dataset.py):
- kb_text:     the index's own chunks (data/chunks/chunks.jsonl); dataset.sources is not read
- qa:          {"question", "answers" (or "answer"), "doc_ids"?} -> question turn + short-answer turn
- raft:        the same QA rows, each turned into question + oracle and distractor passages -> short answer
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.config import resolve_path
from tasks.core.errors import SourceError
from tasks.core.jsonl import json_objects
from tasks.core.workspace import Layout, file_digest, iter_jsonl

ROLES = ("system", "user", "assistant")
QA_FORMATS = ("qa", "raft")
ENCODING = {"kb_text": "text", "qa": "instruction", "raft": "instruction"}  # how each format is tokenized


def encoding(fmt: str) -> str:
    """The tokenization a format uses: chat-template turns, raw text blocks, or labelled text."""
    return ENCODING.get(fmt, fmt)


def question_hash(question: str) -> str:
    """Identity of a question across files and rephrased whitespace/case (the train/held-out split key)."""
    return hashlib.sha256(" ".join(question.lower().split()).encode()).hexdigest()[:16]


@dataclass
class Example:
    example_id: str  # "<source path>:<line>", the path relative to the project root (as params.yaml names it)
    format: str
    messages: list[dict] = field(default_factory=list)  # instruction/chat
    text: str = ""  # text/labelled
    label: str | None = None  # labelled
    problem: str = ""  # why the record is unusable ("" = fine)
    qa: dict | None = None  # qa/raft: {question, answers, doc_ids}

    @property
    def split_key(self) -> str:
        """QA examples split by question, so a question never moves between train and held-out."""
        return question_hash(self.qa["question"]) if self.qa else self.content_hash

    @property
    def content_hash(self) -> str:
        body = json.dumps([self.messages, self.text, self.label], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


def detect_format(record: dict, path: Path) -> str:
    if "messages" in record:
        return "chat"
    if "question" in record:
        return "qa"
    if "instruction" in record or "output" in record:
        return "instruction"
    if "text" in record and "label" in record:
        return "labelled"
    if "text" in record:
        return "text"
    raise SourceError(
        f"{path}: line 1 has fields {sorted(record)}; cannot tell the format. Expected instruction/output, "
        "messages, question/answers, text or text+label, or set dataset.format in params.yaml."
    )


def _fix(value) -> str:
    import ftfy  # heavy: see tests/unit/test_layers.py HEAVY

    return unicodedata.normalize("NFC", ftfy.fix_text(value)).strip() if isinstance(value, str) else ""


def to_example(record: dict, fmt: str, example_id: str, system_prompt: str | None) -> Example:
    """Normalise one record; a record missing what its format needs is kept with `problem` set for the gate."""
    ex = Example(example_id=example_id, format=fmt)
    if fmt in QA_FORMATS:
        question = _fix(record.get("question"))
        answers = record.get("answers", [record.get("answer")] if "answer" in record else [])
        answers = [_fix(a) for a in ([answers] if isinstance(answers, str) else answers or [])]
        doc_ids = record.get("doc_ids") or []
        if not question or not answers or not all(answers):
            ex.problem = "question and answers (or answer) must be non-empty strings"
        if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
            ex.problem, doc_ids = "doc_ids must be a list of strings", []
        ex.qa = {"question": question, "answers": answers, "doc_ids": doc_ids}
        ex.messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answers[0] if answers else ""},
        ]
    elif fmt == "instruction":
        prompt = _fix(record.get("instruction"))
        extra = _fix(record.get("input"))
        answer = _fix(record.get("output"))
        if not prompt or not answer:
            ex.problem = "instruction and output must be non-empty strings"
        ex.messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": f"{prompt}\n\n{extra}" if extra else prompt},
            {"role": "assistant", "content": answer},
        ]
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
    if fmt == "kb_text":
        return kb_chunk_examples(root), fmt
    examples: list[Example] = []
    seen: set[str] = set()
    for source in sources:
        path = resolve_path(root, source)
        name = source_name(root, path)
        if name in seen:
            raise SourceError(f"dataset.sources lists {name} twice; its examples would count double. List it once.")
        seen.add(name)
        if not path.is_file():
            raise SourceError(
                f"dataset.sources: {path} is not a file. Point it at a JSONL training file "
                "(e.g. data/sample/train/instructions.jsonl)."
            )
        with path.open(encoding="utf-8", errors="replace") as f:
            for lineno, record in json_objects(f, str(path)):
                if fmt == "auto":
                    fmt = detect_format(record, path)
                elif fmt in QA_FORMATS and not examples and "question" not in record:
                    raise SourceError(
                        f"{path}:{lineno}: dataset.format={fmt} reads question/answers rows, but this record has "
                        f"fields {sorted(record)}. Set dataset.format=auto to train on the file's own format "
                        f"(e.g. `ragtune retrain --source {path.name} dataset.format=auto`), or give a QA file."
                    )
                examples.append(to_example(record, fmt, f"{name}:{lineno}", system_prompt))
    if fmt == "auto":
        raise SourceError(f"dataset.sources {sources}: no records found. Add training examples to the file(s).")
    return examples, fmt


def source_name(root: Path, path: Path) -> str:
    """A training file's name in example ids: its path under the project root, so a/qa.jsonl and b/qa.jsonl
    stay apart (as documents' doc_ids are paths under their source folder); a file elsewhere keeps its full path."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def kb_chunk_examples(root: Path) -> list[Example]:
    """Continued pretraining on the knowledge base: one text example per indexed chunk, in index order."""
    chunks = Layout(root).chunks
    if not chunks.is_file():
        raise SourceError(
            f"dataset.format=kb_text trains on the knowledge base's chunks, but {chunks} does not "
            "exist yet. Run `ragtune refresh` first."
        )
    return [
        Example(example_id=f"{c['doc_id']}#{c.get('position', i)}", format="kb_text", text=_fix(c["text"]))
        for i, c in enumerate(iter_jsonl(chunks, "chunk"), 1)
    ]


def version_files(root: Path, fmt: str, sources: list[str]) -> list[str]:
    """The files a format's examples come from: its sources, plus the knowledge base's chunks for kb formats."""
    chunks = str(Layout(root).chunks.relative_to(root))
    return [chunks] if fmt == "kb_text" else list(sources) + ([chunks] if fmt == "raft" else [])


def data_version(root: Path, sources: list[str]) -> dict[str, str]:
    """md5 of each source file, the hash DVC 3 records for it in dvc.lock (`dvc get` finds it by that)."""
    out = {}
    for s in sources:
        if not resolve_path(root, s).is_file():  # e.g. the index's chunks before the first refresh
            out[s] = "missing"
            continue
        out[s] = file_digest(resolve_path(root, s), "md5")
    return out
