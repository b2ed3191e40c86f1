"""RAG, fine-tune or both, measured: each mode answers the same QA set; costs come from ragtune's own lineage.

Per mode: SQuAD exact match, token F1 and contains (tasks.core.qa), recall@k of the passages it was given (rag,
hybrid), latency p50/p95 per question and answers/s, and what answered: model, adapter (with the data format
and knowledge-base version it learned from), parameters and weight memory. Costs: index size and refresh time
(data/metrics, refresh history), adapter size and training time (models/), how often the knowledge changed
(refresh history). The recommendation picks, among the modes within compare.accuracy_tolerance of the best F1
(and inside the latency budget), the one that is cheapest to keep current, and says so with those numbers.

A QA file with only doc_ids has nothing to score answers against: rag and hybrid are scored on retrieval only,
base and ft not at all, and the report says so. A question an adapter was trained on (dataset.format qa or
raft) is refused before anything runs: scoring it would measure memory, not knowledge.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable, Sequence
from pathlib import Path

from tasks.answer.answerer import ADAPTED, RETRIEVING
from tasks.answer.profile import knowledge_changes, span_days
from tasks.core.config import CompareParams, ConfigError, Params, resolve_path
from tasks.core.errors import RagtuneError
from tasks.core.qa import squad_scores
from tasks.core.stage import OnProgress
from tasks.core.workspace import Layout
from tasks.kb.retrieval_eval import latency, score_row
from tasks.pipeline import stage_names
from tasks.train.adapter import ADAPTER_FILE
from tasks.train.examples import question_hash
from tasks.train.registry import ModelRegistry

SCORES = ("exact", "f1", "contains")

# what keeps each mode current when the knowledge changes
UPKEEP = {
    "base": "nothing (it cannot learn new facts)",
    "rag": "a refresh",
    "ft": "a retrain",
    "hybrid": "a refresh, plus a retrain when the task or style changes",
}


def has_answers(rows: list[dict]) -> bool:
    return any(r["answers"] for r in rows)


def training_overlap(info: dict, rows: list[dict]) -> int:
    """How many of the QA rows' questions the adapter (ragtune.json) was trained on."""
    trained = set(info.get("dataset", {}).get("train_questions") or [])
    return sum(question_hash(r["question"]) in trained for r in rows)


def refuse_trained_questions(version: str, info: dict, rows: list[dict], qa_file: str) -> None:
    overlap = training_overlap(info, rows)
    if overlap:
        data = info.get("dataset", {})
        held = data.get("heldout_qa")
        raise ConfigError(
            f"{qa_file}: {overlap} of {len(rows)} questions were in adapter {version}'s training set "
            f"(dataset.format={data.get('format')}, {len(data.get('train_questions', []))} training questions); "
            "scoring them would measure memory, not knowledge. Compare on questions it never saw"
            + (f", e.g. its held-out split {held} ({data.get('heldout_questions')} questions)" if held else "")
            + ", or retrain without them."
        )


def check_heldout(
    adapter_for: Callable[[str], tuple[str, Path, dict]], modes: Sequence[str], rows: list[dict], qa_file: str
) -> None:
    """No adapter may be scored on questions it was trained on (a missing adapter is reported per mode later)."""
    for mode in [m for m in modes if m in ADAPTED]:
        try:
            version, _, info = adapter_for(mode)
        except RagtuneError:
            continue
        refuse_trained_questions(version, info, rows, qa_file)


def evaluate_mode(
    answer_many: Callable[..., list[dict]],
    mode: str,
    rows: list[dict],
    k: int,
    on_progress: OnProgress = None,
) -> dict:
    """Answer every question in one mode (batched); a mode that cannot run (no adapter, no model) is skipped
    with why. With no answers in the QA file, only modes that retrieve are scored, on retrieval."""
    if not has_answers(rows) and mode not in RETRIEVING:
        return {
            "mode": mode,
            "status": "not scored",
            "questions": len(rows),
            "reason": "the QA file gives doc_ids only, so there are no answers to score and no passages",
        }
    try:
        results = answer_many([r["question"] for r in rows], mode, on_progress=on_progress, generate=has_answers(rows))
    except RagtuneError as exc:
        return {"mode": mode, "status": "skipped", "reason": str(exc), "questions": len(rows)}
    scored = [
        (squad_scores(res["answer"], row["answers"]) if res["answer"] is not None else None)
        for res, row in zip(results, rows)
        if row["answers"]
    ]
    generated = bool(scored) and all(s is not None for s in scored)
    recalls = [score_row(res["sources"], row, k)[0] for res, row in zip(results, rows)] if mode in RETRIEVING else []
    wall_s = sum(res["timings_ms"]["total"] for res in results) / 1000
    first = results[0]
    out = {
        "mode": mode,
        "questions": len(rows),
        "scored_questions": len(scored),
        **{s: round(sum(x[s] for x in scored if x) / len(scored), 4) if generated else None for s in SCORES},
        f"recall_at_{k}": round(sum(recalls) / len(recalls), 4) if recalls else None,
        **latency([res["timings_ms"]["total"] for res in results]),
        "answers_per_s": round(len(results) / wall_s, 2) if wall_s and generated else None,
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # so far
        **{
            key: first.get(key)
            for key in ("model", "adapter", "params_m", "weights_mb", "load_s", "adapter_format", "adapter_kb")
        },
        "samples": [
            {
                "question": row["question"],
                "expected": row["answers"][:1],
                "answer": res["answer"],
                "sources": [s["doc_id"] for s in res["sources"]],
            }
            for res, row in zip(results[:3], rows)
        ],
    }
    if generated:
        out.update(status="ok", reason=None)
    elif not has_answers(rows):
        out.update(status="retrieval only", reason="the QA file gives doc_ids only: scored on retrieval alone")
    else:
        out.update(status="passages only", reason=first.get("note"))
    return out


def lineage_costs(ws: Layout, params: Params) -> dict:
    """What ragtune already knows about the cost of each way to keep knowledge current."""
    index: dict = {"points": None, "documents": None, "store_mb": None, "refresh_seconds": None}
    if ws.index_manifest.exists():
        m = json.loads(ws.index_manifest.read_text())
        index.update(points=m["chunks"], documents=m["documents"])
    store = resolve_path(ws.root, params.index.local_path)
    if store.is_dir():
        # blocks, not sizes: the embedded store's mmap files are sparse (a 0.5 MB store has ~100 MB of holes)
        index["store_mb"] = round(sum(f.stat().st_blocks * 512 for f in store.rglob("*") if f.is_file()) / 1e6, 2)
    index["refresh_seconds"] = _stage_seconds(ws, stage_names("kb", optional=False))
    knowledge = knowledge_changes(ws)
    adapter: dict = {
        "version": None,
        "adapter_mb": None,
        "train_seconds": None,
        "retrain_seconds": None,
        "trainings": None,
    }
    registry = ModelRegistry(ws)
    version = registry.production_version()
    if version:
        weights = registry.folder(version) / "adapter" / ADAPTER_FILE
        info = registry.info(version) if (registry.folder(version) / "ragtune.json").exists() else {}
        adapter.update(
            version=version,
            adapter_mb=round(weights.stat().st_size / 1e6, 3) if weights.exists() else None,
            train_seconds=info.get("train_metrics", {}).get("train_seconds"),
            retrain_seconds=_stage_seconds(ws, stage_names("model")),
        )
    lineage = registry.lineage()
    adapter["trainings"] = len(lineage)
    adapter["span_days"] = span_days([e.get("at") for e in lineage])
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


def recommend(results: list[dict], costs: dict, p: CompareParams, profile: dict | None = None) -> dict:
    """The cheapest-to-keep-current mode among the (nearly) most accurate ones, with the numbers behind it, and
    what the data profile says (tasks/answer/profile.py)."""
    rec = _recommend(results, costs, p, few_examples(profile))
    if profile:
        rec["why"] += [f"Data: {line}" for line in profile["advice"]]
    return rec


def few_examples(profile: dict | None) -> bool:
    """The profile found too few training examples to trust an adapter's score."""
    return profile is not None and bool(profile["few_train_examples"])


def _recommend(results: list[dict], costs: dict, p: CompareParams, few: bool) -> dict:
    scored = [r for r in results if r.get("f1") is not None]
    if not scored:
        if results and all(r["status"] in ("retrieval only", "not scored") for r in results):
            recall = [
                f"{r['mode']} recall@{_k(r)} {r[f'recall_at_{_k(r)}']:.2f}"
                for r in results
                if r["status"] == "retrieval only"
            ]
            return {
                "choice": None,
                "why": [
                    "The QA file gives doc_ids but no answers, so answers cannot be scored and no mode can be "
                    f"recommended on accuracy. Retrieval only: {', '.join(recall) or 'no retrieving mode ran'}. Add "
                    '"answers" (short strings the right answer contains) to the rows to compare the modes.'
                ],
            }
        return {
            "choice": None,
            "why": [
                "No mode produced answers, so accuracy cannot decide. Configure a generator (generate.model or "
                "model.base: a local folder, a .gguf file or a cached hub id) and, for ft/hybrid, promote an adapter "
                "(`ragtune retrain`)."
            ],
        }
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
    best = max(r["f1"] for r in fits)
    if best == 0:
        recall = [
            f"{r['mode']} recall {r[f'recall_at_{_k(r)}']:.2f}"
            for r in scored
            if r.get(f"recall_at_{_k(r)}") is not None
        ]
        return {
            "choice": None,
            "why": why
            + [
                "No mode got a single answer token right (F1 0.00 everywhere), so the numbers cannot "
                "separate them: the generator is too weak for these questions. Use a stronger generate.model / "
                "model.base and retrain the adapter on it."
                + (f" Retrieval itself works: {', '.join(recall)}." if recall else "")
            ],
        }
    tied = [r for r in fits if r["f1"] >= best - p.accuracy_tolerance]
    k = costs["knowledge"]
    changing = bool(k["refreshes_with_changes"])
    if changing:  # the base model cannot learn what changed: it only competes when nothing changes
        tied = [r for r in tied if r["mode"] != "base"] or tied
    if few:  # an adapter trained on a handful of examples is a fragile win: equal accuracy goes to a mode without one
        tied = [r for r in tied if r["mode"] not in ADAPTED] or tied
    choice = min(tied, key=lambda r: (upkeep_seconds(r["mode"], costs), r["p50_ms"] or 0))
    others = ", ".join(f"{r['mode']} {r['f1']:.2f}" for r in scored if r is not choice)
    why.append(
        f"Accuracy (SQuAD token F1, the deciding score): {choice['mode']} {choice['f1']:.2f}; "
        f"{others or 'no other mode ran'}. Modes within {p.accuracy_tolerance:.2f} of the best ({best:.2f}) "
        f"count as equally accurate: {', '.join(r['mode'] for r in tied)}. Exact match {choice['exact']:.2f}, "
        f"contains {choice['contains']:.2f}."
    )
    if choice.get(f"recall_at_{_k(choice)}") is not None:
        why.append(
            f"Its passages hold the answer for {choice[f'recall_at_{_k(choice)}']:.0%} of questions "
            f"(recall@{_k(choice)})."
        )
    why.append(
        f"Time per answer (its retrieval + its share of a batch's generation): p50 {choice['p50_ms']:.0f} ms, "
        f"p95 {choice['p95_ms']:.0f} ms, with "
        f"{choice.get('model') or 'no model'} ({choice.get('params_m')}M parameters"
        + (f" + adapter {choice['adapter']}" if choice.get("adapter") else "")
        + ")."
    )
    i, a = costs["index"], costs["adapter"]
    if changing:
        every = f"every {k['days_between_changes']} days" if k["days_between_changes"] else "in the recorded runs"
        why.append(
            f"Freshness: the knowledge changed in {k['refreshes_with_changes']} of {k['refreshes']} refreshes "
            f"({every}, {k['mean_changed_documents']} documents each time)."
        )
    else:
        why.append("Freshness: no refresh has recorded a change yet, so update cost weighs less than accuracy.")
    why.append(
        f"Cost of staying current: {choice['mode']} needs {UPKEEP[choice['mode']]}; the last refresh took "
        f"{_num(i['refresh_seconds'], 's')} (index {i['points']} points, {_num(i['store_mb'], 'MB')}), the "
        f"last retrain {_num(a.get('retrain_seconds') or a['train_seconds'], 's')} (adapter "
        f"{_num(a['adapter_mb'], 'MB')})."
    )
    return {"choice": choice["mode"], "why": why}


def _k(result: dict) -> int:
    return next(int(key.rsplit("_", 1)[1]) for key in result if key.startswith("recall_at_"))


def _num(value, unit: str) -> str:
    return "unknown" if value is None else f"{value} {unit}"


def comparison_rows(report: dict) -> list[dict]:
    """One row per mode: the table in the CLI and in the Prefect UI."""
    k = report["k"]
    return [
        {
            "mode": r["mode"],
            "status": r["status"],
            "EM": r.get("exact"),
            "F1": r.get("f1"),
            "contains": r.get("contains"),
            f"recall@{k}": r.get(f"recall_at_{k}"),
            "p50_ms": r.get("p50_ms"),
            "p95_ms": r.get("p95_ms"),
            "answers/s": r.get("answers_per_s"),
            "generator": generator_name(r),
            "params_m": r.get("params_m"),
            "weights_mb": r.get("weights_mb"),
            "process_peak_mb": r.get("process_peak_rss_mb"),
        }
        for r in report["modes"]
    ]


def generator_name(result: dict) -> str | None:
    """Short name of what answered: the model's file or folder name, plus the adapter version."""
    if not result.get("model"):
        return None
    name = Path(result["model"].split("/", 1)[-1] if result["model"].startswith("package:") else result["model"]).name
    return name + (f" + {result['adapter']}" if result.get("adapter") else "")


def comparison_markdown(report: dict) -> str:
    rec = report["recommendation"]
    rows = comparison_rows(report)
    cols = list(rows[0])
    c, i, a = report["costs"]["knowledge"], report["costs"]["index"], report["costs"]["adapter"]
    lines = [
        f"# RAG, fine-tune or both: {report['questions']} questions from `{report['qa_file']}`",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *["| " + " | ".join("" if r[col] is None else str(r[col]) for col in cols) + " |" for r in rows],
        "",
        f"**Index**: {i['points']} points, {_num(i['store_mb'], 'MB')}, last refresh "
        f"{_num(i['refresh_seconds'], 's')}.",
        f"**Adapter**: {a['version'] or 'none'}, {_num(a['adapter_mb'], 'MB')}, training loop "
        f"{_num(a['train_seconds'], 's')}, last retrain {_num(a.get('retrain_seconds'), 's')}; "
        f"{a['trainings']} trainings recorded.",
        f"**Knowledge changes**: {c['refreshes_with_changes']} of {c['refreshes']} refreshes.",
        "",
        f"## Recommendation: {rec['choice'] or 'none'}",
        "",
        *[f"- {w}" for w in rec["why"]],
    ]
    models = {
        r["mode"]: r["model"]
        + (
            f" + adapter {r['adapter']} (trained on {r.get('adapter_format')}"
            + (f", {r['adapter_kb']}" if r.get("adapter_kb") else "")
            + ")"
            if r.get("adapter")
            else ""
        )
        for r in report["modes"]
        if r.get("model")
    }
    if models:
        lines += ["", "**Generators**: " + "; ".join(f"{m}: `{g}`" for m, g in models.items())]
    skipped = [r for r in report["modes"] if r["status"] != "ok"]
    if skipped:
        lines += ["", *[f"- {r['mode']}: {r['status']}: {r['reason']}" for r in skipped]]
    return "\n".join(lines)
