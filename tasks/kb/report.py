"""The refresh report: one dict built from the stage metrics, rendered as a table, markdown or JSON."""

from __future__ import annotations

import json

from tasks.core.clock import utc_iso
from tasks.core.workspace import Layout, read_json, write_json
from tasks.kb import stages as kb_stages

STAGES = tuple(s.name for s in kb_stages.STAGES if not s.optional)  # the optional gate is reported on its own


def build_report(ws: Layout, total_seconds: float | None = None) -> dict:
    """Collect every stage's metrics file into the run report and save it as the DVC metrics file."""
    m = {s: read_json(ws.stage_metrics(s), s) for s in STAGES}
    docs = dict(m["index"]["documents"])
    docs["dropped"] = sum(m["clean"]["dropped"].values())
    report = {
        "documents": docs,
        "dropped_by_reason": m["clean"]["dropped"],
        "drops": [{"doc_id": d["doc_id"], "status": d["status"], "reason": d["reason"]} for d in m["clean"]["drops"]],
        "chunks": {"total": m["chunk"]["chunks"], "embedded": m["embed"]["embedded"], "reused": m["embed"]["reused"]},
        "points": {
            "written": m["index"]["points_written"],
            "deleted": m["index"]["points_deleted"],
            "in_index": m["verify"]["points"],
        },
        "quality": {
            "passed": m["validate"]["success"],
            "expectations": m["validate"]["evaluated"],
            "data_docs": m["validate"]["data_docs"],
        },
        "serving": {
            "index": m["publish"]["serving"],
            "published": m["publish"]["published"],  # False: nothing new was written (or a server in place)
            "previous": m["publish"].get("previous"),  # what `ragtune rollback` serves again
            "rebuilt": m["index"].get("rebuild"),  # why a new index was built beside the old one, if it was
        },
        **({"web": web_summary(m["ingest"])} if "web" in m["ingest"] else {}),
        "web_problems": m["ingest"].get("web_problems", []),
        "embed_chunks_per_s": m["embed"]["chunks_per_s"],
        "index_points_per_s": m["index"]["points_per_s"],
        "seconds": {s: m[s]["seconds"] for s in STAGES},
        "run_version": m["index"]["run_version"],
    }
    gate = ws.stage_metrics("eval_retrieval")
    ev = read_json(gate, "eval_retrieval") if gate.exists() else {}
    if ev.get("run_version") == report["run_version"] and not ev.get("skipped"):  # this run's gate ran (qa_file set)
        k = ev["k"]
        report["retrieval"] = {
            "mode": ev["mode"],
            f"recall_at_{k}": ev[f"recall_at_{k}"],
            f"mrr_at_{k}": ev[f"mrr_at_{k}"],
            "p95_ms": ev["p95_ms"],
            "passed": ev["passed"],
        }
        report["seconds"]["eval_retrieval"] = ev["seconds"]
    if total_seconds is not None:
        report["seconds"]["total"] = round(total_seconds, 3)
    write_json(ws.refresh_report, report)
    return report


def append_history(ws: Layout, report: dict) -> None:
    """One line per refresh (when, what changed, how long): `compare` reads how often the knowledge changes."""
    d = report["documents"]
    line = {
        "run_version": report["run_version"],
        "at": utc_iso(),
        "changed_documents": d["added"] + d["changed"] + d["removed"],
        "documents": d,
        "points": report["points"]["in_index"],
        "seconds": report["seconds"].get("total"),
    }
    ws.refresh_history.parent.mkdir(parents=True, exist_ok=True)
    with ws.refresh_history.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def web_summary(ingest: dict) -> dict:
    """What the web sources came to: pages by outcome and requests (an unchanged page is one 304)."""
    w = ingest["web"]
    return {**w["outcomes"], "requests": w["requests"], "not_modified": w["not_modified"]}


def report_rows(report: dict) -> list[dict]:
    """Flat (section, metric, value) rows: the Prefect table artifact and the CLI table."""
    rows = []
    for section in ("documents", "web", "chunks", "points", "serving", "retrieval"):
        rows += [{"section": section, "metric": k, "value": v} for k, v in report.get(section, {}).items()]
    rows += [{"section": "dropped", "metric": k, "value": v} for k, v in report["dropped_by_reason"].items()]
    rows += [{"section": "seconds", "metric": k, "value": v} for k, v in report["seconds"].items()]
    return rows


def web_line(w: dict) -> str:
    outcomes = ", ".join(f"{v} {k}" for k, v in w.items() if k not in ("requests", "not_modified"))
    return f"**Web pages**: {outcomes}; {w['requests']} requests, {w['not_modified']} answered 304 (not modified)."


def serving_line(s: dict) -> str:
    if not s["published"]:
        return f"**Serving**: {s['index']} (nothing staged: unchanged, or a server's collection updated in place)."
    why = f"; rebuilt beside it: {s['rebuilt']}" if s["rebuilt"] else ""
    return f"**Serving**: {s['index']}, published after verify and the gates (previous: {s['previous']}{why})."


def report_markdown(report: dict) -> str:
    d, c, p = report["documents"], report["chunks"], report["points"]
    lines = [
        f"# Knowledge-base refresh {report['run_version']}",
        "",
        f"**Documents**: {d['added']} added, {d['changed']} changed, {d['unchanged']} unchanged, "
        f"{d['removed']} removed, {d.get('repaired', 0)} repaired, {d['dropped']} dropped.",
        f"**Chunks**: {c['total']} total, {c['embedded']} embedded, {c['reused']} reused from cache.",
        f"**Points**: {p['written']} written, {p['deleted']} deleted, {p['in_index']} in the index (verified).",
        *([web_line(report["web"])] if "web" in report else []),
        serving_line(report["serving"]),
        f"**Quality gate**: {'passed' if report['quality']['passed'] else 'FAILED'} "
        f"({report['quality']['expectations']} expectations) - Data Docs: `{report['quality']['data_docs']}`",
        *(
            [
                f"**Retrieval gate**: {'passed' if report['retrieval']['passed'] else 'FAILED'} - "
                + ", ".join(f"{k} {v}" for k, v in report["retrieval"].items() if k != "passed")
            ]
            if "retrieval" in report
            else []
        ),
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in report["seconds"].items()],
    ]
    if report.get("web_problems"):
        lines += [
            "",
            "| web page | outcome | reason |",
            "|---|---|---|",
            *[f"| {x['url']} | {x['outcome']} | {x['reason']} |" for x in report["web_problems"]],
        ]
    if report["drops"]:
        lines += [
            "",
            "| dropped document | status | reason |",
            "|---|---|---|",
            *[f"| {x['doc_id']} | {x['status']} | {x['reason']} |" for x in report["drops"]],
        ]
    return "\n".join(lines)
