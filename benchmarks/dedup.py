"""The dedup section: what the clean stage's near-duplicate check costs, and what it finds.

The corpus is N generated documents (benchmarks/corpus.py) plus injected copies of 2% of them under a banner and a
footer, and of 2% more with 2% of their words replaced. Each way is timed in this process on the same records, best
of `repeats`:
  exact    clean_documents with clean.near_duplicate_threshold=null: normalization and the sha256 check only
  near     clean_documents with the default threshold (0.8): + MinHash signatures and LSH (datasketch)
  bare     datasketch alone on the texts clean would see (normalized beforehand, not timed): 5-word shingles,
           MinHash with its default sha1 hashing, LSH at 0.8, query then insert
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from benchmarks import corpus

BANNER = "Archived copy saved from the old support portal. Some links may no longer work.\n\n"
FOOTER = "\n\nCopyright 2024 Larkspur Devices. All rights reserved. Privacy policy | Terms of use | Contact us"
COPY_SHARE = 0.02  # of the documents, per kind of copy
EDIT_SHARE = 0.02  # of an edited copy's words


def records(folder: Path) -> list[dict]:
    """The ingest records clean reads, straight from the files (format markdown, status ok)."""
    out = []
    for path in sorted(folder.rglob("*.md")):
        rel = path.relative_to(folder).as_posix()
        text = path.read_text(encoding="utf-8")
        out.append(
            {
                "doc_id": rel,
                "source": "corpus",
                "path": rel,
                "format": "markdown",
                "status": "ok",
                "reason": "",
                "text": text,
            }
        )
    return out


def inject_copies(folder: Path, seed: int) -> dict[str, str]:
    """Copies of COPY_SHARE of the documents under a banner, and of as many with words replaced, in a folder that
    sorts last (so the original is the one kept). Returns copy doc_id -> original doc_id."""
    rng = random.Random(seed)
    files = sorted(folder.rglob("*.md"))
    k = max(1, int(len(files) * COPY_SHARE))
    picks = rng.sample(files, 2 * k)
    copies: dict[str, str] = {}
    for i, src in enumerate(picks):
        text = src.read_text(encoding="utf-8")
        if i < k:
            text, name = BANNER + text + FOOTER, f"zz-copies/banner-{i:04d}.md"
        else:
            words = text.split(" ")
            for j in rng.sample(range(len(words)), max(1, int(len(words) * EDIT_SHARE))):
                words[j] = "edited"
            text, name = " ".join(words), f"zz-copies/edited-{i:04d}.md"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
        copies[name] = src.relative_to(folder).as_posix()
    return copies


def bare_datasketch(texts: list[tuple[str, str]], threshold: float = 0.8, num_perm: int = 128) -> int:
    """What a user would write with datasketch alone: returns how many texts matched an earlier one."""
    from datasketch import MinHash, MinHashLSH

    word = re.compile(r"\w+")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    found = 0
    for key, text in texts:
        w = word.findall(text.lower())
        m = MinHash(num_perm=num_perm)
        m.update_batch(" ".join(w[i : i + 5]).encode() for i in range(max(len(w) - 4, 1)))
        if lsh.query(m):
            found += 1
        else:
            lsh.insert(key, m)
    return found


def best(repeats: int, fn):
    """(seconds of the fastest of `repeats` calls, that call's result)."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - t, result))
    return min(runs, key=lambda r: r[0])


def dedup_section(work: Path, n_docs: int, seed: int, repeats: int, log) -> dict:
    import datasketch  # noqa: F401  (its 0.7 s import is not what we measure)

    from tasks.core.config import CleanParams
    from tasks.kb.clean import clean_documents, normalize_text

    folder = work / "corpus"
    corpus.generate(folder, n_docs, seed)
    copies = inject_copies(folder, seed)
    raw = records(folder)
    log(f"dedup: {len(raw)} documents ({len(copies)} injected copies)")
    exact_s, (kept_exact, _, _) = best(
        repeats, lambda: clean_documents(raw, CleanParams(near_duplicate_threshold=None))
    )
    near_s, (kept, drops, stats) = best(repeats, lambda: clean_documents(raw, CleanParams()))
    named = {
        d.doc_id for d in drops if d.doc_id in copies and d.reason.startswith(f"near-duplicate of {copies[d.doc_id]}")
    }
    found = len(named)
    missed = sorted(set(copies) - named)
    others = sum(1 for d in drops if d.doc_id not in copies)
    texts = [(r["doc_id"], normalize_text(r["text"])) for r in raw]
    bare_s, bare_found = best(repeats, lambda: bare_datasketch(texts))
    return {
        "documents": len(raw),
        "injected_copies": len(copies),
        "repeats": repeats,
        "exact": {"seconds": round(exact_s, 2), "kept": len(kept_exact)},
        "near": {
            "seconds": round(near_s, 2),
            "kept": len(kept),
            "near_duplicates": stats["near_duplicates"],
            "injected_found": found,
            "other_drops": others,
            "missed": [{"copy": c, "words": len(dict(texts)[c].split())} for c in missed[:20]],
        },
        "bare_datasketch": {"seconds": round(bare_s, 2), "near_duplicates": bare_found},
        "near_overhead_seconds": round(near_s - exact_s, 2),
        "note": "clean_documents in-process, best of repeats; bare = datasketch defaults (sha1) on pre-normalized "
        "texts, so it leaves out the normalization both clean runs include",
    }
