"""RAG, fine-tune or both, measured: each mode answers the same QA set; costs come from ragtune's own lineage.

Per mode: exact and contains accuracy (normalized), recall@k of the passages it was given (rag, hybrid),
latency p50/p95 per question. Costs: index size and refresh time (data/metrics, refresh history), adapter size
and training time (models/), how often the knowledge changed (refresh history). The recommendation picks,
among the modes within compare.accuracy_tolerance of the best accuracy (and inside the latency budget), the one
that is cheapest to keep current, and says so with those numbers.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Callable

from tasks.config import CompareParams, Params, resolve_path
from tasks.errors import RagtuneError
from tasks.retrieval_eval import latency, score_row
from tasks.workspace import Layout, read_jsonl

# what keeps each mode current when the knowledge changes
UPKEEP = {"base": "nothing (it cannot learn new facts)", "rag": "a refresh", "ft": "a retrain",
          "hybrid": "a refresh, plus a retrain when the task or style changes"}


def evaluate_mode(answer: Callable[[str, str], dict], mode: str, rows: list[dict], k: int,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Answer every question in one mode; a mode that cannot run (no adapter, no model) is skipped with why."""
    from tasks.qa import match

    exact = contains = 0
    recalls, ms, samples = [], [], []
    scored = True
    for i, row in enumerate(rows, 1):
        try:
            res = answer(row["question"], mode)
        except RagtuneError as exc:
            return {"mode": mode, "status": "skipped", "reason": str(exc), "questions": len(rows)}
        ms.append(res["timings_ms"]["total"])
        if res["answer"] is None:
            scored = False
        elif row["answers"]:
            e, c = match(res["answer"], row["answers"])
            exact += e
            contains += c
        if mode in ("rag", "hybrid"):
            recalls.append(score_row(res["sources"], row, k)[0])
        if len(samples) < 3:
            samples.append({"question": row["question"], "answer": res["answer"],
                            "sources": [s["doc_id"] for s in res["sources"]]})
        if on_progress:
            on_progress(i, len(rows))
    with_answers = sum(1 for r in rows if r["answers"]) or 1
    return {"mode": mode, "status": "ok" if scored else "passages only",
            "reason": None if scored else res.get("note"), "questions": len(rows),
            "exact": round(exact / with_answers, 4) if scored else None,
            "contains": round(contains / with_answers, 4) if scored else None,
            f"recall_at_{k}": round(sum(recalls) / len(recalls), 4) if recalls else None,
            **latency(ms), "model": res.get("model"), "adapter": res.get("adapter"), "samples": samples}


def _span_days(times: list[str]) -> float | None:
    stamps = sorted(datetime.fromisoformat(t) for t in times if t)
    return round((stamps[-1] - stamps[0]).total_seconds() / 86400, 2) if len(stamps) > 1 else None


def _read_jsonl(path: Path) -> list[dict]:
    return read_jsonl(path, "kb_refresh or retrain") if path.exists() else []  # no history yet: no lines


def lineage_costs(ws: Layout, params: Params) -> dict:
    """What ragtune already knows about the cost of each way to keep knowledge current."""
    index: dict = {"points": None, "documents": None, "store_mb": None, "refresh_seconds": None}
    if ws.index_manifest.exists():
        m = json.loads(ws.index_manifest.read_text())
        index.update(points=m["chunks"], documents=m["documents"])
    store = resolve_path(ws.root, params.index.local_path)
    if store.is_dir():
        index["store_mb"] = round(sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6, 2)
    index["refresh_seconds"] = _stage_seconds(ws, ("ingest", "clean", "validate", "chunk", "embed", "index", "verify"))
    history = _read_jsonl(ws.refresh_history)
    changes = [h for h in history if h.get("changed_documents")]
    span = _span_days([h.get("at") for h in history])
    knowledge = {"refreshes": len(history), "refreshes_with_changes": len(changes), "span_days": span,
                 "days_between_changes": round(span / len(changes), 2) if span and changes else None,
                 "mean_changed_documents": round(sum(h["changed_documents"] for h in changes) / len(changes), 1)
                 if changes else None}
    adapter: dict = {"version": None, "adapter_mb": None, "train_seconds": None, "retrain_seconds": None,
                     "trainings": None}
    if ws.production.exists():
        prod = json.loads(ws.production.read_text())
        folder = ws.models / prod["path"]
        weights = folder / "adapter/adapter_model.safetensors"
        info = json.loads((folder / "ragtune.json").read_text()) if (folder / "ragtune.json").exists() else {}
        adapter.update(version=prod["version"], adapter_mb=round(weights.stat().st_size / 1e6, 3)
                       if weights.exists() else None,
                       train_seconds=info.get("train_metrics", {}).get("train_seconds"),
                       retrain_seconds=_stage_seconds(ws, ("build_dataset", "train", "evaluate", "promote")))
    lineage = _read_jsonl(ws.models / "lineage.jsonl")
    adapter["trainings"] = len(lineage)
    adapter["span_days"] = _span_days([e.get("at") for e in lineage])
    return {"index": index, "knowledge": knowledge, "adapter": adapter}


def _stage_seconds(ws: Layout, stages: tuple[str, ...]) -> float | None:
    """Wall seconds of the last run's stages (imports and model loads included, orchestration excluded), so a
    refresh and a retrain are timed alike."""
    files = [ws.stage_metrics(s) for s in stages]
    if not all(f.exists() for f in files):
        return None
    return round(sum(json.loads(f.read_text()).get("seconds", 0) for f in files), 1)


def upkeep_seconds(mode: str, costs: dict) -> float:
    """Seconds of pipeline work to bring a mode up to date after the knowledge changes (unknown = worst)."""
    refresh = costs["index"]["refresh_seconds"]
    train = costs["adapter"]["retrain_seconds"] or costs["adapter"]["train_seconds"]
    need = {"base": [], "rag": [refresh], "ft": [train], "hybrid": [refresh]}[mode]
    return float("inf") if any(v is None for v in need) else float(sum(need))


def recommend(results: list[dict], costs: dict, p: CompareParams) -> dict:
    """The cheapest-to-keep-current mode among the (nearly) most accurate ones, with the numbers behind it."""
    scored = [r for r in results if r.get("contains") is not None]
    if not scored:
        return {"choice": None, "why": [
            "No mode produced answers, so accuracy cannot decide. Configure a generator (generate.model or "
            "model.base: a local folder or a cached hub id) and, for ft/hybrid, promote an adapter "
            "(`ragtune retrain`)."]}
    why = []
    fits = scored
    if p.latency_budget_ms:
        fits = [r for r in scored if r["p95_ms"] is not None and r["p95_ms"] <= p.latency_budget_ms]
        over = [f"{r['mode']} ({r['p95_ms']:.0f} ms)" for r in scored if r not in fits]
        if over:
            why.append(f"Over the {p.latency_budget_ms:.0f} ms p95 latency budget: {', '.join(over)}.")
        if not fits:
            why.append("No mode meets the latency budget; choosing on accuracy and upkeep alone.")
            fits = scored
    best = max(r["contains"] for r in fits)
    if best == 0:
        recall = [f"{r['mode']} recall {r[f'recall_at_{_k(r)}']:.2f}" for r in scored
                  if r.get(f"recall_at_{_k(r)}") is not None]
        return {"choice": None, "why": why + [
            "No mode answered a single question correctly (contains 0.00 everywhere), so the numbers cannot "
            "separate them: the generator is too weak for these questions. Use a stronger generate.model / "
            "model.base and retrain the adapter on it." + (f" Retrieval itself works: {', '.join(recall)}."
                                                           if recall else "")]}
    tied = [r for r in fits if r["contains"] >= best - p.accuracy_tolerance]
    k = costs["knowledge"]
    changing = bool(k["refreshes_with_changes"])
    if changing:  # the base model cannot learn what changed: it only competes when nothing changes
        tied = [r for r in tied if r["mode"] != "base"] or tied
    choice = min(tied, key=lambda r: (upkeep_seconds(r["mode"], costs), r["p50_ms"] or 0))
    others = ", ".join(f"{r['mode']} {r['contains']:.2f}" for r in scored if r is not choice)
    why.append(f"Accuracy (contains): {choice['mode']} {choice['contains']:.2f}; {others or 'no other mode ran'}. "
               f"Modes within {p.accuracy_tolerance:.2f} of the best ({best:.2f}) count as equally accurate: "
               f"{', '.join(r['mode'] for r in tied)}.")
    if choice.get(f"recall_at_{_k(choice)}") is not None:
        why.append(f"Its passages hold the answer for {choice[f'recall_at_{_k(choice)}']:.0%} of questions "
                   f"(recall@{_k(choice)}).")
    why.append(f"Latency per answer: p50 {choice['p50_ms']:.0f} ms, p95 {choice['p95_ms']:.0f} ms.")
    i, a = costs["index"], costs["adapter"]
    if changing:
        every = f"every {k['days_between_changes']} days" if k["days_between_changes"] else "in the recorded runs"
        why.append(f"Freshness: the knowledge changed in {k['refreshes_with_changes']} of {k['refreshes']} refreshes "
                   f"({every}, {k['mean_changed_documents']} documents each time).")
    else:
        why.append("Freshness: no refresh has recorded a change yet, so update cost weighs less than accuracy.")
    why.append(f"Cost of staying current: {choice['mode']} needs {UPKEEP[choice['mode']]}; the last refresh took "
               f"{_num(i['refresh_seconds'], 's')} (index {i['points']} points, {_num(i['store_mb'], 'MB')}), the "
               f"last retrain {_num(a.get('retrain_seconds') or a['train_seconds'], 's')} (adapter "
               f"{_num(a['adapter_mb'], 'MB')}).")
    return {"choice": choice["mode"], "why": why}


def _k(result: dict) -> int:
    return next(int(key.rsplit("_", 1)[1]) for key in result if key.startswith("recall_at_"))


def _num(value, unit: str) -> str:
    return "unknown" if value is None else f"{value} {unit}"


def comparison_rows(report: dict) -> list[dict]:
    """One row per mode: the table in the CLI and in the Prefect UI."""
    k = report["k"]
    return [{"mode": r["mode"], "status": r["status"], "exact": r.get("exact"), "contains": r.get("contains"),
             f"recall@{k}": r.get(f"recall_at_{k}"), "p50_ms": r.get("p50_ms"), "p95_ms": r.get("p95_ms")}
            for r in report["modes"]]


def comparison_markdown(report: dict) -> str:
    rec = report["recommendation"]
    rows = comparison_rows(report)
    cols = list(rows[0])
    c, i, a = report["costs"]["knowledge"], report["costs"]["index"], report["costs"]["adapter"]
    lines = [f"# RAG, fine-tune or both: {report['questions']} questions from `{report['qa_file']}`", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
             *["| " + " | ".join("" if r[col] is None else str(r[col]) for col in cols) + " |" for r in rows], "",
             f"**Index**: {i['points']} points, {_num(i['store_mb'], 'MB')}, last refresh "
             f"{_num(i['refresh_seconds'], 's')}.",
             f"**Adapter**: {a['version'] or 'none'}, {_num(a['adapter_mb'], 'MB')}, training loop "
             f"{_num(a['train_seconds'], 's')}, last retrain {_num(a.get('retrain_seconds'), 's')}; "
             f"{a['trainings']} trainings recorded.",
             f"**Knowledge changes**: {c['refreshes_with_changes']} of {c['refreshes']} refreshes.", "",
             f"## Recommendation: {rec['choice'] or 'none'}", "", *[f"- {w}" for w in rec["why"]]]
    models = {r["mode"]: r["model"] + (f" + adapter {r['adapter']}" if r.get("adapter") else "")
              for r in report["modes"] if r.get("model")}
    if models:
        lines += ["", "**Generators**: " + "; ".join(f"{m}: `{g}`" for m, g in models.items())]
    skipped = [r for r in report["modes"] if r["status"] != "ok"]
    if skipped:
        lines += ["", *[f"- {r['mode']}: {r['status']}: {r['reason']}" for r in skipped]]
    return "\n".join(lines)
