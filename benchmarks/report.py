"""The benchmark results as one markdown page: machine, then a table per section."""

from __future__ import annotations

import json
from pathlib import Path


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows] + [""]


def _status(res: dict | None) -> str | None:
    if not res:
        return "not run"
    if res.get("status") != "ok":
        return res.get("reason") or res.get("error") or res.get("status")
    return None


def markdown(r: dict) -> str:
    m = r["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
    out = [
        f"### ragtune benchmarks ({r['mode']} mode, {m['date_utc']}, commit {m['commit']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mb']} MB RAM, GPU: {m['gpu'] or 'none'}; "
        f"{m['os']}; Python {m['python']}.",
        f"Libraries: {libs}.",
        "",
    ]
    sections = (
        ("refresh", _refresh),
        ("bare", _bare),
        ("efficiency", _efficiency),
        ("overhead", _overhead),
        ("training", _training),
        ("encoders", _encoders),
        ("knowledge", _knowledge),
        ("generation", _generation),
        ("scale", _scale),
        ("dedup", _dedup),
        ("fusion", _fusion),
        ("web", _web),
    )
    out += _targets(r)
    ran = [name for name, _ in sections if name in r]  # --only runs hold some sections; the rest are left out
    out += [f"Sections in this run: {', '.join(ran) or 'none'}.", ""]
    for name, table in sections:
        if name in r:
            other = r.get("section_runs", {}).get(name)
            if other:  # measured by a later --only run (benchmarks/runner.py replace_sections)
                m2 = other["machine"]
                out += [
                    f"*{name}: measured in its own run ({other['mode']} mode, {m2['date_utc']}, commit "
                    f"{m2['commit']}, {m2['cores']} cores).*",
                    "",
                ]
            out += table(r[name])
    out.append(f"Total benchmark time: {r.get('total_seconds')} s.")
    return "\n".join(out) + "\n"


def _refresh(res: dict | None) -> list[str]:
    out = ["#### Refresh: full, unchanged, 1% changed + 1% deleted + 1% added", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    c = res["corpus"]
    out.append(
        f"Corpus: {c['documents']} generated documents (seed {c['seed']}, median {c['words_median']} words, "
        f"p95 {c['words_p95']}, max {c['words_max']}); chunks of {res['chunk_size_tokens']} tokens; every system "
        f"encodes with the same model at batch {res.get('encode_batch', 64)}. "
        "Wall = a fresh process per run (imports, model load, Prefect for ragtune); "
        "fraction = wall / full-run wall. Recall@5 / MRR@5: "
        f"{res.get('generated_questions', '?')} generated questions on each system's index after the full run."
    )
    out.append("")
    rows = []
    for name, s in res["systems"].items():
        if s.get("status") != "ok":
            rows.append([name, "", "", "", "", "", "", "", s.get("reason") or s.get("error", "")[:200]])
            continue
        full, same, churn = s["full"], s["unchanged"], s["churn_1pct"]
        ret = s.get("retrieval_generated") or {}
        rows.append(
            [
                name,
                full.get("points"),
                full["wall_seconds"],
                full["embedded"],
                f"{ret.get('recall_at_5', '')} / {ret.get('mrr_at_5', '')}",
                f"{same['embedded']} / {same['wall_seconds']} s / {same['wall_fraction_of_full']}",
                f"{churn['embedded']} / {churn['wall_seconds']} s / {churn['wall_fraction_of_full']}",
                churn.get("points"),
                "",
            ]
        )
    same = res.get("ragtune_torch_full")
    if same:
        ret = same.get("retrieval_generated") or {}
        rows.insert(
            1,
            [
                "ragtune, embed.backend=torch",
                same["points"],
                same["wall_seconds"],
                same["embedded"],
                f"{ret.get('recall_at_5', '')} / {ret.get('mrr_at_5', '')}",
                "",
                "",
                "",
                "the peers' encoder (sentence-transformers fp32)",
            ],
        )
    out += _table(
        [
            "system",
            "points (full)",
            "full wall s",
            "full embedded",
            "recall@5 / MRR@5",
            "unchanged: embedded / wall / fraction",
            "1% churn: embedded / wall / fraction",
            "points after churn",
            "note",
        ],
        rows,
    )
    small = res.get("small_corpus")
    if small:
        names = [n for n in small if isinstance(small[n], dict)]
        out += [
            f"Small corpus, cold (a new project or state each): the sample corpus's {small['documents']} markdown and "
            f"text files, {small['questions']} of its questions (those about them).",
            "",
        ]
        out += _table(
            ["system", "cold wall s", "recall@5", "MRR@5"],
            [
                [n, small[n]["wall_seconds"], small[n]["retrieval"]["recall_at_5"], small[n]["retrieval"]["mrr_at_5"]]
                for n in names
            ],
        )
    return out


def targets(r: dict) -> list[dict]:
    """The speed targets (issue 18) as measured in this run: value, target and whether it is met."""
    rows: list[dict] = []
    systems = (r.get("refresh") or {}).get("systems", {})
    ours = systems.get("ragtune", {})
    if ours.get("status") == "ok":
        full = ours["full"]["wall_seconds"]
        peers = {n: s["full"]["wall_seconds"] for n, s in systems.items() if n != "ragtune" and s.get("status") == "ok"}
        if peers:
            fastest = min(peers, key=peers.get)
            rows.append(
                {
                    "target": f"full refresh wall / fastest peer's ({fastest})",
                    "value": round(full / peers[fastest], 3),
                    "goal": "<= 0.8",
                    "met": full / peers[fastest] <= 0.8,
                }
            )
        bare = (r.get("bare") or {}).get("bare")
        same = r["refresh"].get("ragtune_torch_full")
        if bare and same:
            ratio = bare["wall_seconds"] / same["wall_seconds"]
            rows.append(
                {
                    "target": "full refresh speed / bare script's, same encoder (bare process wall / ragtune's "
                    "with embed.backend=torch)",
                    "value": round(ratio, 3),
                    "goal": ">= 0.95",
                    "met": ratio >= 0.95,
                }
            )
        rows.append(
            {
                "target": "unchanged re-run wall / full",
                "value": ours["unchanged"]["wall_fraction_of_full"],
                "goal": "<= 0.05",
                "met": ours["unchanged"]["wall_fraction_of_full"] <= 0.05,
            }
        )
    over = r.get("overhead") or {}
    if over.get("status") == "ok":
        steady = over["steady_state"]["process_overhead_seconds"]
        rows.append(
            {
                "target": "fixed overhead of a 1-document refresh, no server (wall - stage work, s)",
                "value": steady,
                "goal": "<= 8",
                "met": steady <= 8,
            }
        )
    return rows


def _targets(r: dict) -> list[str]:
    rows = targets(r)
    if not rows:
        return []
    return ["#### Speed targets", ""] + _table(
        ["target", "measured", "goal", "met"],
        [[t["target"], t["value"], t["goal"], "yes" if t["met"] else "no"] for t in rows],
    )


def _bare(res: dict | None) -> list[str]:
    out = ["#### Per stage vs the bare libraries (full refresh)", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    st = res["ragtune_stage_seconds"]
    rows = [[s, st[s], "", ""] for s in st if s not in ("embed", "index")]
    rows.insert(
        4,
        [
            "embed (imports + model load + encode)",
            res["embed"]["ragtune_seconds"],
            res["embed"]["bare_seconds"],
            res["embed"]["ratio_speed"],
        ],
    )
    rows.insert(
        5,
        [
            "index (open + upsert)",
            res["index"]["ragtune_seconds"],
            res["index"]["bare_seconds"],
            res["index"]["ratio_speed"],
        ],
    )
    rows.append(
        [
            "whole process",
            res["ragtune_wall_seconds"],
            res["bare"]["wall_seconds"],
            round(res["bare"]["wall_seconds"] / res["ragtune_wall_seconds"], 3),
        ]
    )
    return (
        out
        + [
            f"{res['chunks']} chunks. The bare script: import sentence-transformers + qdrant-client, load, "
            "encode, upload_points; ragtune: the same full refresh's stages (each includes its imports).",
            "",
        ]
        + _table(["stage", "ragtune s", "bare script s", "speed vs bare"], rows)
    )


def _efficiency(res: dict | None) -> list[str]:
    out = ["#### Stage efficiency (alternating with the bare call, best of N; target >= 0.9)", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    e, i = res["embed"], res["index"]
    rows = [
        [
            "embed stage vs load + encode",
            f"{e['ragtune_stage_chunks_per_s']} chunks/s",
            f"{e['bare_load_plus_encode_chunks_per_s']} chunks/s",
            e["efficiency_stage"],
        ],
        [
            "embed encode loop vs encode",
            f"{e['ragtune_encode_loop_chunks_per_s']} chunks/s",
            f"{e['bare_encode_chunks_per_s']} chunks/s",
            e["efficiency_encode_loop"],
        ],
        [
            "index stage vs open + create + upload_points",
            f"{i['ragtune_stage_points_per_s']} points/s",
            f"{i['bare_open_create_upload_points_per_s']} points/s",
            i["efficiency_stage"],
        ],
        [
            "upsert loop vs upload_points",
            f"{i['ragtune_upsert_loop_points_per_s']} points/s",
            f"{i['bare_upload_points_per_s']} points/s",
            i["efficiency_upsert_loop"],
        ],
    ]
    return (
        out
        + [f"{res['chunks']} chunks, {res['repeats']} rounds.", ""]
        + _table(["measure", "ragtune", "bare", "efficiency"], rows)
    )


def _overhead(res: dict | None) -> list[str]:
    out = ["#### Fixed orchestration overhead (1-document refresh)", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    rows = [
        [
            label,
            x["wall_seconds"],
            x["flow_seconds"],
            x["stage_work_seconds"],
            x["process_overhead_seconds"],
            x["flow_overhead_seconds"],
        ]
        for label, x in (
            ("first run, new project", res["first_run_new_project"]),
            ("steady state, ephemeral Prefect", res["steady_state"]),
            ("steady state, `ragtune server` running", res["with_running_server"]),
        )
    ]
    return out + _table(["run", "process wall s", "flow s", "stage work s", "wall - work s", "flow - work s"], rows)


def _training(res: dict | None) -> list[str]:
    out = ["#### LoRA training throughput (non-padding tokens/s)", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    rows = []
    for name, t in res["runs"].items():
        rows.append(
            [
                name,
                t["device"],
                t["precision"],
                t["steps"],
                t["batch_size"],
                t["ragtune"]["tokens_per_s"],
                t["bare_trainer_peft"]["tokens_per_s"],
                t["ratio_tokens_per_s"],
                t["ragtune"].get("loop_tokens_per_s"),
                t["ragtune"].get("peak_gpu_mb") or f"{t['ragtune']['peak_rss_mb']} (RSS)",
                (t.get("mfu_ragtune") or {}).get("lora"),
            ]
        )
    return (
        out
        + _table(
            [
                "config",
                "device",
                "precision",
                "steps",
                "batch",
                "ragtune tok/s",
                "bare Trainer+PEFT tok/s",
                "ratio",
                "ragtune loop-only tok/s",
                "peak MB",
                "MFU (LoRA)",
            ],
            rows,
        )
        + [
            "Both sides are timed over the whole trainer.train() call (DeepSpeed init included on both); the loop-only "
            f"column starts at on_train_begin. GPU: {res['gpu']}.",
            "",
        ]
    )


def _encoders(res: dict | None) -> list[str]:
    out = ["#### Embedded encoder backends on CPU", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    sets = list(res["quality_sets"])
    rows = [
        [
            name,
            b["chunks_per_s"],
            b.get("speedup", 1.0),
            *(f"{b[q]['recall_at_5']} / {b[q]['mrr_at_5']}" for q in sets),
            b.get("quality_loss_pts", 0.0),
            b.get("cosine_to_pytorch_min", 1.0),
            b.get("meets_bar", ""),
        ]
        for name, b in res["backends"].items()
    ]
    sizes = "; ".join(
        f"{q}: {v['questions']} questions over {v['chunks']} chunks" for q, v in res["quality_sets"].items()
    )
    notes = [f"{res['speed_chunks']} chunks for speed. {sizes}. Bar: {res['bar']}. Decision: {res['decision']}."]
    if res.get("skipped_runtimes"):
        notes.append(f"ONNX Runtime / OpenVINO {res['skipped_runtimes']}.")
    header = ["backend", "chunks/s", "speed vs first row", *(f"{q} recall@5 % / MRR@5" for q in sets)]
    header += [f"recall loss pts ({res['decided_on']})", "min cosine to first row", "meets bar"]
    return out + _table(header, rows) + notes + [""]


def _modes(rows: list[dict], extra: bool) -> list[str]:
    k = next((key for key in rows[0] if key.startswith("recall_at_")), "recall_at_3")
    header = ["mode", "EM", "F1", "contains", f"recall@{k.rsplit('_', 1)[1]}", "p50 ms", "p95 ms"]
    header += ["train s", "adapter MB"] if extra else []
    return _table(
        header,
        [
            [r["mode"], r.get("exact"), r.get("f1"), r.get("contains"), r.get(k), r.get("p50_ms"), r.get("p95_ms")]
            + ([r.get("train_seconds"), r.get("adapter_mb")] if extra else [])
            for r in rows
        ],
    )


def _knowledge(res: dict | None) -> list[str]:
    out = ["#### Knowledge injection: RAG, fine-tune or both (SmolLM2-135M-Instruct, greedy)", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    f, s = res["fictional"], res["sample"]
    c = f["corpus"]
    out += [
        f"Fictional corpus: {c['documents']} generated documents, {c['train_questions']} training and "
        f"{f['eval_questions']} evaluation questions (differently phrased). Every adapter is trained by ragtune's "
        "stages on this machine; latency is per answer in batches of generate.batch_size.",
        "",
    ]
    out += _modes(f["rows"], True)
    ad = [
        [name, a["format"], a["train_examples"], a["steps"], a["tokens_per_s"], a["train_seconds"], a["adapter_mb"]]
        for name, a in f["adapters"].items()
    ]
    out += _table(["adapter", "format", "train examples", "steps", "tokens/s", "train s", "MB"], ad)
    a = s["adapter"]
    out += [
        f"Sample corpus: {s['questions']} questions from data/sample/questions.jsonl; RAFT adapter trained on "
        f"data/sample/train/kb_qa.jsonl ({a['train_examples']} examples, {a['steps']} steps, "
        f"{a['train_seconds']} s).",
        "",
    ]
    return out + _modes(s["rows"], False)


def _generation(res: dict | None) -> list[str]:
    out = ["#### Generation: batched vs one question at a time", ""]
    if _status(res):
        return out + [f"Not measured: {_status(res)}", ""]
    return (
        out
        + _table(
            ["way", "seconds", "answers/s"],
            [
                [
                    "one model.generate per question",
                    res["one_at_a_time"]["seconds"],
                    res["one_at_a_time"]["answers_per_s"],
                ],
                [f"batched ({res['batch_size']} per call)", res["batched"]["seconds"], res["batched"]["answers_per_s"]],
            ],
        )
        + [
            f"{res['questions']} rag prompts from the sample corpus (mean {res['mean_prompt_tokens']} tokens), "
            f"max_new_tokens {res['max_new_tokens']}; speed-up {res['ratio_answers_per_s']}x; "
            f"{res['identical_answers']} of {res['questions']} answers identical.",
            "",
        ]
    )


BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"


def _scale(res: dict | None, note: bool = True) -> list[str]:
    out = ["#### Scale: the store alone, refresh size, Dask embedding", ""]
    if _status(res):
        return out + [_status(res) or "", ""]
    assert res is not None
    rows = []
    for s in res["store"]:
        q = s["query"]
        rows.append(
            [
                "qdrant-edge (default)" if s["engine"] == "edge" else "local mode (before)",
                f"{s['points']:,}",
                f"{s['upsert_points_per_s']:,.0f}",
                s["hnsw_build_seconds"] if s["hnsw_build_seconds"] is not None else "-",
                *(f"{q[m]['p50_ms']} / {q[m]['p95_ms']}" for m in ("dense", "sparse", "hybrid")),
                s["disk_mb"],
                s["peak_rss_mb"],
            ]
        )
    out += _table(
        [
            "store",
            "points",
            "upsert pts/s",
            "HNSW build s",
            "dense p50/p95 ms",
            "sparse p50/p95 ms",
            "hybrid p50/p95 ms",
            "disk MB",
            "peak RSS MB",
        ],
        rows,
    )
    out += ["", res["note"], ""] if note else [""]
    rows = [
        [
            f"{r['documents']:,}",
            f"{r['chunks']:,}",
            r["wall_seconds"],
            r["embed_chunks_per_s"],
            r["index_points_per_s"],
            r["stage_seconds"]["index"],
            f"{100 * r['index_share']:.1f}%",
            r["peak_rss_mb"],
        ]
        for r in res["refresh"]
    ]
    out += _table(
        [
            "documents",
            "chunks",
            "refresh wall s",
            "embed chunks/s",
            "index pts/s",
            "index s",
            "index share",
            "peak RSS MB",
        ],
        rows,
    )
    if res.get("dask"):
        d = res["dask"]
        out += [
            "",
            *_table(
                ["embed on Dask", "chunks", "seconds", "chunks/s", "identical to 1 worker"],
                [
                    [f"{w['workers']} worker(s)", w["chunks"], w["seconds"], w["chunks_per_s"], w.get("identical", "-")]
                    for w in d["runs"]
                ],
            ),
        ]
    return out + [""]


def _dedup(res: dict | None) -> list[str]:
    out = ["#### Near-duplicates: the clean stage's cost and finds", ""]
    if _status(res):
        return out + [_status(res) or "", ""]
    assert res is not None
    n, near = res["documents"], res["near"]
    rows = [
        ["clean, exact copies only", res["exact"]["seconds"], round(n / res["exact"]["seconds"]), "—", "—"],
        [
            "clean, + near-duplicates (default)",
            near["seconds"],
            round(n / near["seconds"]),
            near["near_duplicates"],
            f"{near['injected_found']} of {res['injected_copies']} ({near['other_drops']} other drops)",
        ],
        [
            "datasketch alone (sha1, pre-normalized)",
            res["bare_datasketch"]["seconds"],
            round(n / res["bare_datasketch"]["seconds"]),
            res["bare_datasketch"]["near_duplicates"],
            "",
        ],
    ]
    out += [
        f"{n} documents, of which {res['injected_copies']} are injected copies (half under a banner and footer, half "
        f"with 2% of words replaced); best of {res['repeats']}.",
        "",
    ]
    out += _table(["run", "seconds", "docs/s", "near-duplicates", "injected copies found"], rows)
    return out + [f"The check adds {res['near_overhead_seconds']} s to clean at this size.", ""]


def _fusion(res: dict | None) -> list[str]:
    out = ["#### Fusion: dense, sparse and hybrid retrieval by fusion method", ""]
    if _status(res):
        return out + [_status(res) or "", ""]
    assert res is not None
    sets = res["sets"]
    names = list(sets)
    header = ["retriever"] + [f"{n} {m}" for n in names for m in ("R@1", "R@5", "MRR@5")]
    by_label: dict[str, list] = {}
    for n in names:
        for row in sets[n]["rows"]:
            by_label.setdefault(row["retriever"], []).extend(
                [f"{row['recall_at_1']:.3f}", f"{row['recall_at_5']:.3f}", f"{row['mrr_at_5']:.3f}"]
            )
    sizes = ", ".join(f"{n}: {sets[n]['questions']} questions" for n in names)
    out += [f"{sizes}; {res['candidates']} candidates per retriever.", ""]
    return out + _table(header, [[label, *cells] for label, cells in by_label.items()])


def _web(res: dict | None) -> list[str]:
    out = ["#### Web sources: fetching a site again", ""]
    if _status(res):
        return out + [_status(res) or "", ""]
    assert res is not None
    r, bare = res["ragtune"], res["bare"]
    rows = [
        [f"ragtune, {name}", x["seconds"], x["requests"], x["not_modified"], x["documents"]]
        for name, x in (("first run", r["first"]), ("nothing changed", r["unchanged"]), ("1% edited", r["after_edit"]))
    ]
    rows.append(["no state: GET + extract every page", bare["seconds"], bare["requests"], 0, bare["documents"]])
    out += [
        f"A site of {res['pages']} HTML pages and a sitemap on a local http.server; {res['note']}.",
        "",
    ]
    out += _table(["run", "seconds", "requests", "answered 304", "documents"], rows)
    speedup = res["unchanged_speedup"]
    return out + [f"With nothing changed, the stateless fetch takes {speedup}x as long as ragtune's ingest.", ""]


def results_block(page: str) -> str:
    """The generated part of a docs page: the text between the RESULTS markers."""
    return page.partition(BEGIN)[2].partition(END)[0].strip("\n") + "\n"


SCALE_BEGIN, SCALE_END = "<!-- SCALE:BEGIN -->", "<!-- SCALE:END -->"


def scale_block(r: dict) -> str:
    """The README's scale table: the scale section of the published results, with the run that measured it."""
    if "scale" not in r:
        return "No scale run is published yet: `make bench BENCH_ARGS='--only scale --publish'`.\n"
    m = r.get("section_runs", {}).get("scale", r)["machine"]
    when = f"{m['date_utc'][:10]}, commit {m['commit']}, {m['cores']} cores"
    head = f"Measured by `python -m benchmarks --only scale` ({when}):"
    return "\n".join([head, "", *_scale(r["scale"], note=False)[2:]]).rstrip("\n") + "\n"


def _between(page: Path, begin: str, end: str, text: str) -> None:
    head, _, rest = page.read_text().partition(begin)
    _, _, tail = rest.partition(end)
    page.write_text(f"{head}{begin}\n{text}{end}{tail}")


def publish(results: Path, page: Path, readme: Path | None = None) -> None:
    """Write the markdown of a results JSON beside it (RESULTS.md) and into the page between the RESULTS markers;
    the scale table also goes into the README between the SCALE markers."""
    r = json.loads(results.read_text())
    text = markdown(r)
    results.with_suffix(".md").write_text(text)
    _between(page, BEGIN, END, text)
    if readme is not None:
        _between(readme, SCALE_BEGIN, SCALE_END, scale_block(r))


if __name__ == "__main__":  # python -m benchmarks.report benchmarks/RESULTS.json docs/benchmarks.md README.md
    import sys

    publish(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
