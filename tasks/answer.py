"""Answers in four modes, from the same base model so they compare fairly:

  base    the base model alone          rag     base model + numbered passages from the index
  ft      base model + LoRA adapter     hybrid  adapter + numbered passages

Generation is greedy by default (generate.temperature = 0), so an answer is reproducible. With no loadable
generator, `rag` still returns the best passages (and says why there is no answer) instead of failing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tasks.config import ConfigError, ModelParams, Params
from tasks.errors import RagtuneError
from tasks.workspace import Layout

MODES = ("rag", "ft", "hybrid", "base")
RETRIEVING = ("rag", "hybrid")
ADAPTED = ("ft", "hybrid")
INSTRUCTION = ("Answer the question using the numbered passages below. Cite the passages you use as [n]. "
               "If they do not contain the answer, say so.")


@dataclass
class Generator:
    model: object
    tokenizer: object
    template: str
    base: str
    adapter: str | None  # version, for ft and hybrid


def resolve_adapter(ws: Layout, version: str | None) -> tuple[str, Path, dict]:
    """(version, adapter folder, ragtune.json) of the given version, or of production when None."""
    versions = ws.models / "versions"
    known = sorted(p.name for p in versions.iterdir() if (p / "adapter").is_dir()) if versions.is_dir() else []
    if version in (None, "production"):
        if not ws.production.exists():
            raise ConfigError(f"{ws.production}: no promoted adapter, which modes ft and hybrid need. Run "
                              "`ragtune retrain` first, or pass --adapter VERSION (`ragtune versions --kind model`).")
        version = json.loads(ws.production.read_text())["version"]
    folder = versions / str(version)
    if not (folder / "adapter").is_dir():
        raise ConfigError(f"--adapter {version}: no such adapter under {versions}. Known versions: "
                          f"{', '.join(known) or 'none (run `ragtune retrain`)'}.")
    info = json.loads((folder / "ragtune.json").read_text())
    if info.get("task", "causal_lm") != "causal_lm":
        raise ConfigError(f"--adapter {version}: a {info['task']} adapter classifies, it cannot answer questions; "
                          "pick a causal_lm version.")
    return str(version), folder / "adapter", info


def check_reachable(name: str, field: str) -> None:
    """Fail in seconds, not after the hub client's minute of retries, when a hub id can neither be found in the
    HF cache nor downloaded (an offline machine)."""
    import os
    import socket
    from urllib.parse import urlsplit

    if Path(name).expanduser().exists() or os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # a folder, or from_pretrained fails at once by itself
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise ConfigError(f"{field} '{name}': not a local folder, not in the HF cache, and {host} is unreachable. "
                          "Set generate.model (or model.base) to a local model folder, e.g. one made by "
                          "`ragtune tiny-model models/tiny-causal`, or download the model on a machine with "
                          "network first.") from None


def load_generator(params: Params, adapter: tuple[str, Path, dict] | None = None) -> Generator:
    """The base model by name or path (generate.model, else model.base), or the adapter's own base + adapter."""
    from transformers.utils import logging as hf_logging

    from tasks.adapter import load_base, load_with_adapter
    from tasks.dataset import chat_template, load_tokenizer

    hf_logging.disable_progress_bar()  # the weight-loading bar is noise in answers and logs

    if adapter:
        version, folder, info = adapter
        mp = ModelParams(base=info["base_model"], revision=info.get("revision"), task="causal_lm",
                         trust_remote_code=params.model.trust_remote_code)
        field = f"adapter {version}: base model"
        check_reachable(mp.base, field)
        model = load_with_adapter(mp, folder)
    else:
        version = None
        mp = params.model.model_copy(update={"base": params.generate.model or params.model.base,
                                             "task": "causal_lm"})
        field = "generate.model" if params.generate.model else "model.base"
        check_reachable(mp.base, field)
        model = load_base(mp, field=field)
    import torch

    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    tokenizer = load_tokenizer(mp, field)
    return Generator(model, tokenizer, chat_template(tokenizer, params.dataset.fallback_template), mp.base, version)


def context_message(question: str, passages: list[dict]) -> str:
    blocks = [f"[{i}] ({p['source']}) {' '.join(p['text'].split())}" for i, p in enumerate(passages, 1)]
    return f"{INSTRUCTION}\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def prompt_ids(gen: Generator, question: str, passages: list[dict], params: Params) -> tuple[list[int], int]:
    """Chat-template prompt ids and how many passages fit generate.max_context_tokens (best first)."""
    from tasks.qa import chat_prompt_ids

    system = params.dataset.system_prompt
    if not passages:
        return chat_prompt_ids(gen.tokenizer, gen.template, question, system), 0
    for n in range(len(passages), 0, -1):
        ids = chat_prompt_ids(gen.tokenizer, gen.template, context_message(question, passages[:n]), system)
        if len(ids) <= params.generate.max_context_tokens or n == 1:
            return ids, n
    raise AssertionError("unreachable")


class Answerer:
    """Holds the retriever and the (at most two) generators across questions; close() releases the store."""

    def __init__(self, root: Path, params: Params, adapter_version: str | None = None):
        self.ws, self.params, self.adapter_version = Layout(root), params, adapter_version
        self._retriever = None
        self._generators: dict[bool, Generator] = {}
        self._failed: dict[bool, RagtuneError] = {}  # a model that did not load is not retried per question

    def retriever(self):
        if self._retriever is None:
            from tasks.retrieval import Retriever

            self._retriever = Retriever(self.ws.root, self.params).warm()
        return self._retriever

    def generator(self, adapted: bool) -> Generator:
        if adapted in self._failed:
            raise self._failed[adapted]
        if adapted not in self._generators:
            try:
                adapter = resolve_adapter(self.ws, self.adapter_version) if adapted else None
                self._generators[adapted] = load_generator(self.params, adapter)
            except RagtuneError as exc:
                self._failed[adapted] = exc
                raise
        return self._generators[adapted]

    def answer(self, question: str, mode: str, top_k: int | None = None) -> dict:
        from tasks.qa import generate

        if mode not in MODES:
            raise ConfigError(f"--mode {mode}: expected one of {', '.join(MODES)}.")
        out = {"question": question, "mode": mode, "answer": None, "sources": [], "model": None, "adapter": None,
               "note": None}
        loading = time.perf_counter()  # models load once, outside the per-question timings
        gen = None
        try:
            gen = self.generator(mode in ADAPTED)
        except RagtuneError as exc:
            if mode != "rag":
                raise
            out["note"] = f"no generator ({exc}); showing the best passages instead of an answer"
        if mode in RETRIEVING:
            self.retriever()
        load_ms = round((time.perf_counter() - loading) * 1000, 1)
        start = time.perf_counter()
        passages = self.retriever().search(question, top_k) if mode in RETRIEVING else []
        retrieved = time.perf_counter()
        if gen is None:
            out["sources"] = [{"n": i, **p} for i, p in enumerate(passages, 1)]
            return {**out, "timings_ms": {**_timings(start, retrieved, retrieved), "load": load_ms}}
        ids, used = prompt_ids(gen, question, passages, self.params)
        g = self.params.generate
        out["answer"] = generate(gen.model, gen.tokenizer, ids, g.max_new_tokens, g.temperature)
        out.update(model=gen.base, adapter=gen.adapter, prompt_tokens=len(ids),
                   sources=[{"n": i, **p} for i, p in enumerate(passages[:used], 1)])
        if used < len(passages):
            out["note"] = f"{len(passages) - used} passages did not fit generate.max_context_tokens"
        return {**out, "timings_ms": {**_timings(start, retrieved, time.perf_counter()), "load": load_ms}}

    def close(self) -> None:
        if self._retriever is not None:
            self._retriever.close()


def _timings(start: float, retrieved: float, end: float) -> dict:
    return {"retrieve": round((retrieved - start) * 1000, 1), "generate": round((end - retrieved) * 1000, 1),
            "total": round((end - start) * 1000, 1)}
