"""Answers in four modes:

  base    a model alone                 rag     a model + numbered passages from the index
  ft      base model + LoRA adapter     hybrid  adapter + numbered passages

base and rag answer with generate.models[mode], else generate.model, else model.base; ft and hybrid with an
adapter (generate.adapters[mode], else --adapter, else production) on the base it was trained on. So one run
can pit a fine-tuned small model against RAG on a larger one. Generation is greedy by default
(generate.temperature = 0), so an answer is reproducible; `answer_many` batches questions (left padding, KV
cache), one model load per generator. With no loadable generator, `rag` still returns the best passages (and
says why there is no answer) instead of failing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.config import ANSWER_MODES, ConfigError, ModelParams, Params
from tasks.core.errors import RagtuneError
from tasks.core.stage import OnProgress
from tasks.core.workspace import Layout
from tasks.kb.retrieval import Retriever
from tasks.lm.generate import context_message, generate_batch
from tasks.lm.models import check_reachable, load_base, load_lm_tokenizer
from tasks.lm.templates import chat_prompt_ids, chat_template
from tasks.train.adapter import load_with_adapter
from tasks.train.registry import ModelRegistry

RETRIEVING = ("rag", "hybrid")
ADAPTED = ("ft", "hybrid")


@dataclass
class Generator:
    model: object
    tokenizer: object
    template: str
    base: str
    adapter: str | None = None  # version, for ft and hybrid
    adapter_info: dict = field(default_factory=dict)  # the adapter's ragtune.json
    parameters: int = 0  # base + adapter
    weights_mb: float = 0.0
    load_seconds: float = 0.0

    def describe(self) -> dict:
        """What answered: the cost columns of `compare`."""
        data = self.adapter_info.get("dataset", {})
        return {
            "model": self.base,
            "adapter": self.adapter,
            "params_m": round(self.parameters / 1e6, 1),
            "weights_mb": round(self.weights_mb, 1),
            "load_s": round(self.load_seconds, 1),
            "adapter_format": data.get("format") if self.adapter else None,
            "adapter_kb": (data.get("kb") or {}).get("kb_tag") if self.adapter else None,
        }


def resolve_adapter(ws: Layout, version: str | None) -> tuple[str, Path, dict]:
    """(version, adapter folder, ragtune.json) of the given version, or of production when None."""
    registry = ModelRegistry(ws)
    if version in (None, "production"):
        version = registry.production_version()
        if version is None:
            raise ConfigError(
                f"{ws.production}: no promoted adapter, which modes ft and hybrid need. Run "
                "`ragtune retrain` first, or pass --adapter VERSION (`ragtune versions --kind model`)."
            )
    folder = registry.folder(str(version))
    if not (folder / "adapter").is_dir():
        raise ConfigError(
            f"--adapter {version}: no such adapter under {ws.versions}. Known versions: "
            f"{', '.join(registry.known()) or 'none (run `ragtune retrain`)'}."
        )
    info = registry.info(str(version))
    if info.get("task", "causal_lm") != "causal_lm":
        raise ConfigError(
            f"--adapter {version}: a {info['task']} adapter classifies, it cannot answer questions; "
            "pick a causal_lm version."
        )
    return str(version), folder / "adapter", info


def load_generator(
    root: Path, params: Params, base: str, field_name: str, adapter: tuple[str, Path, dict] | None = None
) -> Generator:
    """A base model by name, folder or GGUF file, or an adapter's own base + the adapter, ready to generate."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise in answers and logs
    start = time.perf_counter()
    if adapter:
        version, folder, info = adapter
        mp = ModelParams(
            base=info["base_model"],
            revision=info.get("revision"),
            task="causal_lm",
            trust_remote_code=params.model.trust_remote_code,
        )
        field_name = f"the base model of adapter {version}"
        check_reachable(mp.base, field_name)
        model = load_with_adapter(mp, root, folder)
    else:
        version, info = None, {}
        mp = params.model.model_copy(update={"base": base, "task": "causal_lm"})
        check_reachable(mp.base, field_name)
        model = load_base(mp, root, field=field_name)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    tokenizer = load_lm_tokenizer(mp, root, field_name)
    tensors = list(model.parameters())
    return Generator(
        model,
        tokenizer,
        chat_template(tokenizer, params.dataset.fallback_template),
        mp.base,
        version,
        info,
        parameters=sum(t.numel() for t in tensors),
        weights_mb=sum(t.numel() * t.element_size() for t in tensors) / 2**20,
        load_seconds=time.perf_counter() - start,
    )


def prompt_ids(gen: Generator, question: str, passages: list[dict], params: Params) -> tuple[list[int], int]:
    """Chat-template prompt ids and how many passages fit generate.max_context_tokens (best first)."""
    system = params.dataset.system_prompt
    if not passages:
        return chat_prompt_ids(gen.tokenizer, gen.template, question, system), 0
    for n in range(len(passages), 0, -1):
        ids = chat_prompt_ids(gen.tokenizer, gen.template, context_message(question, passages[:n]), system)
        if len(ids) <= params.generate.max_context_tokens or n == 1:
            return ids, n
    raise AssertionError("unreachable")


class Answerer:
    """Holds the retriever and the generators (one per base/adapter pair) across questions; close() releases the
    store."""

    def __init__(self, root: Path, params: Params, adapter_version: str | None = None):
        self.ws, self.params, self.adapter_version = Layout(root), params, adapter_version
        self._retriever = None
        self._generators: dict[str, Generator] = {}  # by model spec or adapter:<version>
        self._failed: dict[str, RagtuneError] = {}  # a model that did not load is not retried per question

    def retriever(self):
        if self._retriever is None:
            self._retriever = Retriever(self.ws.root, self.params).warm()
        return self._retriever

    def model_for(self, mode: str) -> tuple[str, str]:
        """(model spec, the field that chose it) for base and rag."""
        g = self.params.generate
        if mode in g.models:
            return g.models[mode], f"generate.models.{mode}"
        return (g.model, "generate.model") if g.model else (self.params.model.base, "model.base")

    def adapter_for(self, mode: str) -> tuple[str, Path, dict]:
        """(version, folder, ragtune.json) of the adapter ft or hybrid uses; --adapter wins over params.yaml."""
        version = self.adapter_version or self.params.generate.adapters.get(mode)  # type: ignore[call-overload]
        return resolve_adapter(self.ws, None if version == "production" else version)

    def generator(self, mode: str) -> Generator:
        """One loaded generator per model or adapter version, shared by the modes that use it."""
        adapter = self.adapter_for(mode) if mode in ADAPTED else None
        spec, field_name = self.model_for(mode) if adapter is None else (f"adapter:{adapter[0]}", "--adapter")
        if spec in self._failed:
            raise self._failed[spec]
        if spec not in self._generators:
            try:
                self._generators[spec] = load_generator(self.ws.root, self.params, spec, field_name, adapter)
            except RagtuneError as exc:
                self._failed[spec] = exc
                raise
        return self._generators[spec]

    def answer(self, question: str, mode: str, top_k: int | None = None) -> dict:
        """One question (what `ask` runs)."""
        return self.answer_many([question], mode, top_k)[0]

    def answer_many(
        self,
        questions: list[str],
        mode: str,
        top_k: int | None = None,
        on_progress: OnProgress = None,
        generate: bool = True,
    ) -> list[dict]:
        """Answers to several questions, generated generate.batch_size at a time (generate=False: passages only).
        An answer's `generate` time is its share of its batch's generation, so `total` is what the answer cost;
        `batch_generate` is the batch's whole time, what a caller of that batch waited."""
        if mode not in ANSWER_MODES:
            raise ConfigError(f"--mode {mode}: expected one of {', '.join(ANSWER_MODES)}.")
        k = top_k or self.params.generate.passages
        loading = time.perf_counter()  # models load once, outside the per-question timings
        gen, note = None, None if generate else "passages only: no answer was generated"
        try:
            gen = self.generator(mode) if generate else None
        except RagtuneError as exc:
            if mode != "rag":
                raise
            note = f"no generator ({exc}); showing the best passages instead of an answer"
        if mode in RETRIEVING:
            self.retriever()
        load_ms = round((time.perf_counter() - loading) * 1000, 1)
        who = gen.describe() if gen else {"model": None, "adapter": None}
        out = []
        size = self.params.generate.batch_size
        for i in range(0, len(questions), size):
            batch = questions[i : i + size]
            found = []
            for q in batch:
                start = time.perf_counter()
                passages = self.retriever().search(q, k) if mode in RETRIEVING else []
                found.append((passages, (time.perf_counter() - start) * 1000))
            rows = [
                {
                    "question": q,
                    "mode": mode,
                    "answer": None,
                    "note": note,
                    **who,
                    "sources": [{"n": n, **p} for n, p in enumerate(passages, 1)],
                }
                for q, (passages, _) in zip(batch, found)
            ]
            gen_ms = 0.0
            if gen is not None:
                prompts = [prompt_ids(gen, q, passages, self.params) for q, (passages, _) in zip(batch, found)]
                start = time.perf_counter()
                g = self.params.generate
                texts = generate_batch(
                    gen.model, gen.tokenizer, [ids for ids, _ in prompts], g.max_new_tokens, g.temperature
                )
                gen_ms = (time.perf_counter() - start) * 1000
                for row, text, (ids, used), (passages, _) in zip(rows, texts, prompts, found):
                    row.update(answer=text, prompt_tokens=len(ids), sources=row["sources"][:used])
                    if used < len(passages):
                        row["note"] = f"{len(passages) - used} passages did not fit generate.max_context_tokens"
            share = gen_ms / len(batch)
            for row, (_, ret_ms) in zip(rows, found):
                row["timings_ms"] = {
                    "retrieve": round(ret_ms, 1),
                    "generate": round(share, 1),
                    "total": round(ret_ms + share, 1),
                    "load": load_ms,
                    "batch": len(batch),
                    "batch_generate": round(gen_ms, 1),
                }
            out += rows
            if on_progress:
                on_progress(len(out), len(questions))
        return out

    def close(self) -> None:
        if self._retriever is not None:
            self._retriever.close()
