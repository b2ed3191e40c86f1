"""`ragtune profile`: the knowledge base and the training data, measured before choosing RAG, fine-tuning or both.

For each: counts, token lengths, n-gram diversity, exact and near duplicates, language mix, boilerplate. For a QA
file (and QA training data): how many answers occur in some chunk of the knowledge base, which bounds what
retrieval can find. The knowledge base is read as the last refresh cleaned it (data/clean, data/chunks); before any
refresh, ingest and clean run in memory on the sources, writing nothing. `advice` turns the numbers into the
sentences `compare` quotes; compare asks for the counts only (full=False), which never read sources or models.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from tasks.core.config import Params
from tasks.core.errors import RagtuneError
from tasks.core.textstats import answerability, boilerplate, distinct_ngrams, distribution, language_mix
from tasks.core.workspace import Layout, read_jsonl
from tasks.kb.clean import clean_documents
from tasks.kb.dedup import NearDuplicates
from tasks.kb.embedder import PACKAGED_MODELS, load_embedding_tokenizer
from tasks.kb.ingest import ingest_sources, to_record
from tasks.lm.models import load_lm_tokenizer
from tasks.train.examples import QA_FORMATS, Example, read_examples


def span_days(times: list[str | None]) -> float | None:
    """Days from the first to the last of ISO time stamps (None with fewer than two)."""
    stamps = sorted(datetime.fromisoformat(t) for t in times if t)
    return round((stamps[-1] - stamps[0]).total_seconds() / 86400, 2) if len(stamps) > 1 else None


def knowledge_changes(ws: Layout) -> dict:
    """How often the knowledge changed, from the refresh history (one line per kb_refresh). The first line is the
    initial build, where every document is new: it is not a change."""
    history = read_jsonl(ws.refresh_history, "kb_refresh") if ws.refresh_history.exists() else []
    changes = [h for h in history[1:] if h.get("changed_documents")]
    span = span_days([h.get("at") for h in history])
    return {
        "refreshes": len(history),
        "refreshes_with_changes": len(changes),
        "span_days": span,
        "days_between_changes": round(span / len(changes), 2) if span and changes else None,
        "mean_changed_documents": round(sum(h["changed_documents"] for h in changes) / len(changes), 1)
        if changes
        else None,
    }


def kb_documents(ws: Layout, params: Params, read_sources: bool) -> tuple[list[dict], list[dict], str] | None:
    """(kept documents, drops, where they came from): the last refresh's clean output, else (read_sources) the
    sources now, else None."""
    if ws.clean_documents.exists() and ws.clean_drops.exists():
        when = datetime.fromtimestamp(ws.clean_documents.stat().st_mtime, UTC).isoformat(timespec="seconds")
        return read_jsonl(ws.clean_documents, "clean"), read_jsonl(ws.clean_drops, "clean"), f"last refresh ({when})"
    if not read_sources:
        return None
    raw, _ = ingest_sources(ws.root, params.ingest)
    kept, drops, _ = clean_documents([to_record(d) for d in raw], params.clean)
    return [asdict(d) for d in kept], [asdict(d) for d in drops], "sources, read now"


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text, untruncated: a tokenizers.Tokenizer (embedding models) or a transformers tokenizer."""
    if hasattr(tokenizer, "encode_batch"):
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]]


def kb_section(ws: Layout, params: Params, full: bool) -> tuple[dict, list[str]]:
    """The knowledge base's profile, and the passages answers are looked for in (chunks, else documents)."""
    found = kb_documents(ws, params, read_sources=full)
    if found is None:
        return {"unavailable": "no refresh yet (data/clean is empty): run `ragtune refresh`"}, []
    docs, drops, read = found
    texts = [d["text"] for d in docs]
    exact = sum(d["status"] == "duplicate" and d["reason"].startswith("same content") for d in drops)
    near = sum(d["status"] == "duplicate" and d["reason"].startswith("near-duplicate") for d in drops)
    inputs = len(docs) + len(drops)
    out: dict = {
        "read": read,
        "documents": len(docs),
        "inputs": inputs,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "duplicate_share": round((exact + near) / inputs, 3) if inputs else 0.0,
        "words": sum(len(t.split()) for t in texts),
    }
    if full:
        out.update(distinct_ngrams(texts))
        bp = boilerplate(texts, params.profile.boilerplate_min_docs)
        out["boilerplate_share"], out["boilerplate_lines"] = bp["share"], bp["top_lines"]
        tokenizer, _ = load_embedding_tokenizer(params.embed.model)
        out["tokens"] = distribution(token_lengths(tokenizer, texts))
        out["languages"] = language_mix(texts, params.profile.language_sample_chars)
    passages = texts
    if ws.chunks.exists() and read.startswith("last refresh"):
        chunks = read_jsonl(ws.chunks, "chunk")
        if full:
            out["chunks"] = distribution([c["n_tokens"] for c in chunks])
        passages = [c["text"] for c in chunks]
    out["answers_searched_in"] = "chunks" if passages is not texts else "documents"
    return out, passages


def example_text(e: Example) -> str:
    """What an example trains on: its turns' contents, or its text."""
    return "\n".join(m["content"] for m in e.messages) if e.messages else e.text


def train_section(ws: Layout, params: Params, full: bool) -> tuple[dict, list[dict]]:
    """The training data's profile (dataset.sources in dataset.format), and its QA rows if it is QA data."""
    d = params.dataset
    try:
        examples, fmt = read_examples(ws.root, d.sources, d.format, d.system_prompt)
    except RagtuneError as exc:
        return {"unavailable": str(exc)}, []
    usable = [e for e in examples if not e.problem]
    texts = [example_text(e) for e in usable]
    hashes = [e.content_hash for e in usable]
    exact = len(hashes) - len(set(hashes))
    out: dict = {
        "format": fmt,
        "examples": len(examples),
        "usable": len(usable),
        "exact_duplicates": exact,
    }
    if full:
        near_dups = near_duplicates(usable, texts, params) if params.clean.near_duplicate_threshold else None
        out["near_duplicates"] = near_dups
        out["duplicate_share"] = round((exact + (near_dups or 0)) / len(usable), 3) if usable else 0.0
        out.update(distinct_ngrams(texts))
        if texts:
            lengths = token_lengths(load_lm_tokenizer(params.model, ws.root, weights_too=False), texts)
            out["tokens"] = distribution(lengths)
            out["over_max_length"] = sum(n > d.max_length for n in lengths)  # raft: before its passages are added
        out["languages"] = language_mix(texts, params.profile.language_sample_chars)
    qa_rows = [e.qa for e in usable if e.qa] if fmt in QA_FORMATS else []
    return out, qa_rows


def near_duplicates(examples: list[Example], texts: list[str], params: Params) -> int:
    """Examples that are near copies of an earlier one (the clean stage's MinHash check), exact copies aside."""
    c = params.clean
    near = NearDuplicates(c.near_duplicate_threshold or 1.0, c.minhash_permutations, c.shingle_words)
    seen: set[str] = set()
    found = 0
    for e, text in zip(examples, texts, strict=True):
        if e.content_hash not in seen and near.check(e.example_id, text):
            found += 1
        seen.add(e.content_hash)
    return found


def build_profile(ws: Layout, params: Params, qa_rows: list[dict] | None, qa_file: str | None, full=True) -> dict:
    """The whole profile. full=False (compare) keeps the counts and answerability: no sources read, no models."""
    kb, passages = kb_section(ws, params, full)
    train, train_qa = train_section(ws, params, full)
    profile: dict = {"kb": kb, "train": train, "changes": knowledge_changes(ws)}
    if train_qa and passages:
        train["answerable"] = answerability(train_qa, passages)
    if qa_rows and passages:
        profile["qa"] = {"file": qa_file, **answerability(qa_rows, passages)}
    usable = train.get("usable")
    profile["few_train_examples"] = None if usable is None else usable < params.profile.min_train_examples
    profile["advice"] = advice(profile, params)
    return profile


def advice(profile: dict, params: Params) -> list[str]:
    """Sentences with the numbers behind them: what the data says about RAG vs fine-tuning."""
    p, kb, train = params.profile, profile["kb"], profile["train"]
    out = []
    if "unavailable" in train:
        out.append(f"No training data to profile ({train['unavailable'].split('. ')[0]}): fine-tuning needs some.")
    elif profile["few_train_examples"]:
        out.append(
            f"Too few training examples to fine-tune reliably: {train['usable']} usable < profile.min_train_examples="
            f"{p.min_train_examples}. Prefer rag, or add examples (paraphrases of each fact help most)."
        )
    for name, section in (("knowledge base", kb), ("training data", train)):
        share = section.get("duplicate_share", 0)
        if share > p.max_duplicate_share:
            out.append(
                f"{share:.0%} of the {name} is exact or near duplicates (> profile.max_duplicate_share="
                f"{p.max_duplicate_share}): {section['exact_duplicates']} exact, {section['near_duplicates']} near."
            )
    if kb.get("boilerplate_share", 0) > p.max_boilerplate_share:
        top = kb["boilerplate_lines"][0]
        out.append(
            f"{kb['boilerplate_share']:.0%} of the knowledge base's text is lines repeated across documents "
            f"(e.g. '{top['line']}' in {top['documents']}); they dilute retrieval: strip them at the source."
        )
    langs = kb.get("languages") or {}
    if langs:
        main, share = next(iter(langs.items()))
        if share < p.min_main_language_share or main != "en":
            mix = ", ".join(f"{lang} {s:.0%}" for lang, s in list(langs.items())[:4])
            model = params.embed.model
            fix = (
                f"the default embed.model ({model}) is trained on English: use a multilingual one for the rest"
                if model in PACKAGED_MODELS  # all-MiniLM-L6-v2
                else f"check that embed.model ({model}) covers them"
            )
            out.append(f"Language mix of the knowledge base: {mix}; {fix}.")
    c = profile["changes"]
    if c["days_between_changes"] is not None and c["days_between_changes"] <= p.max_days_between_changes_for_ft:
        out.append(
            f"The knowledge changes often: in {c['refreshes_with_changes']} of {c['refreshes'] - 1} refreshes after "
            f"the first, every {c['days_between_changes']} days ({c['mean_changed_documents']} documents each time). "
            "Prefer rag: an adapter only knows what it was trained on, and would need a retrain each time."
        )
    for name, a in (("QA file", profile.get("qa")), ("QA training data", train.get("answerable"))):
        if a and a["share"] is not None and a["share"] < p.min_answerable_share:
            out.append(
                f"Only {a['answerable']} of {a['questions']} answers of the {name} ({a['share']:.0%}) occur in the "
                f"knowledge base's {kb['answers_searched_in']}: retrieval cannot find the rest. Add the sources "
                "that hold them, or fine-tune on them."
            )
    return out


def profile_rows(profile: dict) -> list[dict]:
    """Flat (section, metric, value) rows: the terminal table and the Prefect table artifact."""
    rows = []
    for section in ("kb", "train", "qa", "changes"):
        for key, value in profile.get(section, {}).items():
            if key in ("boilerplate_lines", "not_found"):
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items() if k != "not_found")
            rows.append({"section": section, "metric": key, "value": value})
    return rows


def profile_markdown(profile: dict) -> str:
    """The Prefect markdown artifact: the table, then the advice."""
    lines = ["# Data profile", "", "| section | metric | value |", "|---|---|---|"]
    lines += [f"| {r['section']} | {r['metric']} | {r['value']} |" for r in profile_rows(profile)]
    lines += ["", "## Advice", ""]
    lines += [f"- {a}" for a in profile["advice"]] or ["- Nothing stands out: compare the modes on your questions."]
    return "\n".join(lines) + "\n"
