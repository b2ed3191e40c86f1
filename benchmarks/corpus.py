"""A seeded synthetic corpus of mixed-size markdown documents, and the 1% churn applied between runs."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

TOPICS = [
    "thermostat",
    "heat pump",
    "boiler",
    "firmware",
    "installer",
    "warranty",
    "sensor",
    "gateway",
    "relay",
    "schedule",
    "humidity",
    "furnace",
    "compressor",
    "invoice",
    "subscription",
    "zone",
    "rollout",
    "api",
]
VERBS = [
    "controls",
    "reports",
    "replaces",
    "measures",
    "schedules",
    "requires",
    "supports",
    "limits",
    "updates",
    "monitors",
    "restarts",
    "calibrates",
    "rejects",
    "logs",
    "stores",
]
ADJ = [
    "secondary",
    "modulating",
    "wireless",
    "legacy",
    "regional",
    "certified",
    "optional",
    "encrypted",
    "hourly",
    "two-stage",
    "low-voltage",
    "shared",
    "nightly",
    "remote",
    "default",
]


def _sentence(rng: random.Random) -> str:
    n = rng.randint(6, 18)
    words = []
    for i in range(n):
        pool = (TOPICS, VERBS, ADJ)[i % 3]
        words.append(rng.choice(pool))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"{rng.choice('ABHKPX')}{rng.choice('XLMQ')}-{rng.randint(1000, 9999)}")
    if rng.random() < 0.2:
        words.append(f"{rng.randint(2, 500)} {rng.choice(['V', 'EUR', 'minutes', 'days', '%'])}")
    return " ".join(words).capitalize() + "."


def document(rng: random.Random, doc_no: int) -> str:
    """Markdown with a title, sections and paragraphs; lengths are log-normal (median ~180 words, long tail)."""
    target_words = int(min(max(rng.lognormvariate(4.9, 0.8), 25), 3000))
    lines, words, section = [f"# Document {doc_no}: {rng.choice(TOPICS)} {rng.choice(ADJ)} notes", ""], 0, 0
    while words < target_words:
        if words == 0 or rng.random() < 0.25:
            section += 1
            lines += [f"## Section {section}: {rng.choice(TOPICS)}", ""]
        para = " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))
        words += len(para.split())
        lines += [para, ""]
    return "\n".join(lines)


def generate(out: Path, n_docs: int, seed: int = 7) -> dict:
    """Write n_docs files under out/ (cleared first), spread over 20 folders; returns size statistics."""
    if out.exists():
        shutil.rmtree(out)
    rng = random.Random(seed)
    sizes = []
    for i in range(n_docs):
        text = document(rng, i)
        path = out / f"group-{i % 20:02d}" / f"doc-{i:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        sizes.append(len(text.split()))
    sizes.sort()
    return {
        "documents": n_docs,
        "seed": seed,
        "words_total": sum(sizes),
        "words_median": sizes[len(sizes) // 2],
        "words_p95": sizes[int(len(sizes) * 0.95)],
        "words_max": sizes[-1],
    }


def churn(out: Path, share: float = 0.01, seed: int = 11) -> dict:
    """Change, delete and add `share` of the documents each (at least one of each), in place."""
    rng = random.Random(seed)
    files = sorted(out.rglob("*.md"))
    k = max(1, round(len(files) * share))
    picked = rng.sample(files, 2 * k)
    changed, deleted = picked[:k], picked[k:]
    for path in changed:  # a new paragraph in the middle: some chunks change, the rest keep their text
        lines = path.read_text(encoding="utf-8").split("\n")
        lines.insert(len(lines) // 2, " ".join(_sentence(rng) for _ in range(3)) + "\n")
        path.write_text("\n".join(lines), encoding="utf-8")
    for path in deleted:
        path.unlink()
    start = len(files) + 100_000
    for i in range(k):
        path = out / "added" / f"doc-{start + i:06d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document(rng, start + i), encoding="utf-8")
    return {"changed": k, "deleted": k, "added": k}


CODE = re.compile(r"\b[abhkpx][xlmq]-\d{4}\b", re.IGNORECASE)  # lower case after capitalize()


def generated_qa(corpus: Path, n: int, seed: int = 3) -> list[dict]:
    """Questions over a generated corpus: a sentence holding a product code, asked without the code; the code is
    the answer (a retrieved chunk that holds it is a hit). Only codes that occur once in the corpus are asked."""
    sentences: list[tuple[str, str]] = []  # (code, sentence)
    counts: dict[str, int] = {}
    for path in sorted(corpus.rglob("*.md")):
        for sentence in re.split(r"(?<=\.)\s+", path.read_text(encoding="utf-8")):
            for code in CODE.findall(sentence):
                counts[code] = counts.get(code, 0) + 1
                sentences.append((code, sentence))
    unique = [(code, s) for code, s in sentences if counts[code] == 1]
    picked = random.Random(seed).sample(unique, min(n, len(unique)))
    return [
        {"question": " ".join(s.replace(code, " ").split()).rstrip(".") + "?", "answers": [code], "doc_ids": []}
        for code, s in picked
    ]
