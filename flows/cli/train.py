"""Training commands: retrain the adapter, watch the training data, build a tiny test model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from flows.cli.common import (
    OVERRIDES_ARG,
    PARAMS_OPT,
    SECTION_METRIC_VALUE,
    app,
    err,
    friendly_errors,
    out,
    print_table,
    project_root,
    run_flow,
)
from flows.runtime import require_prefect_server, start_temporary_api
from tasks.core.config import load_params
from tasks.core.errors import SourceError
from tasks.core.workspace import Layout
from tasks.lm.tiny import build_tiny_model
from tasks.train.examples import read_examples
from tasks.train.trainer import deepspeed_config, precision
from tasks.versioning import check_model_versionable


@app.command()
def retrain(
    overrides: list[str] | None = OVERRIDES_ARG,
    source: list[Path] | None = typer.Option(
        None, "--source", help="Training JSONL file (repeatable); replaces dataset.sources."
    ),
    base_model: str | None = typer.Option(
        None, "--base-model", help="HF id, local folder or .gguf file; sets model.base."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the run report as JSON on stdout."),
    params: Path = PARAMS_OPT,
) -> None:
    """Run the retrain flow: build_dataset (GX gate), train LoRA (DeepSpeed), evaluate, promote if better."""
    with friendly_errors():
        root = project_root(params)

        extra = list(overrides or []) + ([f"model.base={_local_or_id(base_model)}"] if base_model else [])
        if source:
            missing = [str(s) for s in source if not s.is_file()]
            if missing:
                raise SourceError(
                    f"--source {', '.join(missing)}: no such file. Give JSONL training files "
                    "(instruction, chat, text, labelled or question/answers rows)."
                )
            extra.append(f"dataset.sources={json.dumps([str(s.resolve()) for s in source])}")
        p = load_params(params, extra)  # fail fast on bad params, before Prefect starts or a model loads

        deepspeed_config(root, p.train)
        precision(p.train)

        read_examples(root, p.dataset.sources, p.dataset.format, p.dataset.system_prompt)  # bad rows: one message
        if p.versioning.enabled:
            check_model_versionable(Layout(root))
        start_temporary_api()  # comes up while the flow's modules import
        from flows.retrain import retrain as retrain_flow

        report = run_flow(
            retrain_flow, not json_out, preload=("great_expectations",), root=str(root), overrides=extra
        )  # DeepSpeed prints to stdout
        if json_out:
            out.print_json(json.dumps(report, default=str))
            return
        print_table(
            f"retrain {report['promotion']['version']}",
            SECTION_METRIC_VALUE,
            [
                {"section": section, "metric": k, "value": v}
                for section in ("data", "train", "candidate", "production")
                for k, v in (report[section] or {}).items()
                if v is not None
            ],
        )
        verdict = "promoted" if report["promotion"]["promoted"] else "NOT promoted"
        out.print(f"{report['promotion']['version']} {verdict}: {report['promotion']['reason']}", highlight=False)


def _local_or_id(value: str) -> str:
    """A path that exists is passed absolute (the flow may run elsewhere); anything else is a hub id."""
    return str(Path(value).resolve()) if Path(value).exists() else value


@app.command()
def watch(
    json_out: bool = typer.Option(False, "--json", help="Print the change report as JSON."),
    params: Path = PARAMS_OPT,
) -> None:
    """Check the training data once; emit `ragtune.data.changed` if it has new examples (triggers retrain)."""
    with friendly_errors():
        root = project_root(params)

        load_params(params)
        require_prefect_server(
            "watch emits `ragtune.data.changed` for the retrain deployment (`ragtune serve` runs watch every "
            "schedule.watch_interval_s and retrains on the event)"
        )
        from flows.watch import watch as watch_flow

        change = run_flow(watch_flow, False, root=str(root))
        if json_out:
            out.print_json(json.dumps(change))
        else:
            out.print(f"{'event emitted' if change['emit'] else 'no event'}: {change['reason']}", highlight=False)


@app.command("tiny-model")
def tiny_model(
    path: Path = typer.Argument(..., help="Folder to create (must be new or empty)."),
    kind: str = typer.Option("causal", "--kind", help="causal (Llama-style LM) | cls (BERT-style classifier)."),
    num_labels: int = typer.Option(3, "--num-labels", min=2, help="cls only: size of the classification head."),
    params: Path = PARAMS_OPT,
) -> None:
    """Build a tiny random model + tokenizer from a config (offline stand-in for a real base model)."""
    with friendly_errors():
        root = project_root(params)

        info = build_tiny_model(path, kind, root, num_labels=num_labels)
        out.print_json(json.dumps(info))
        err.print(
            f"Use it: ragtune retrain --base-model {path}"
            + (" model.task=seq_cls dataset.sources='[data/sample/train/tickets.jsonl]'" if kind == "cls" else ""),
            highlight=False,
        )
