"""CPU encoder options for the embedded model, each against sentence-transformers PyTorch fp32: speed and recall.

Options: PyTorch fp32 at ragtune's batch and twice it, PyTorch bf16 autocast (this CPU has AVX-512 bf16), ONNX
Runtime fp32 and int8 (dynamic per-channel quantization of the MatMul weights, optimum's `avx512_vnni` recipe),
OpenVINO fp32, and OpenVINO int8 as ragtune ships it (embed.backend=openvino-int8: NNCF post-training quantization
of the OpenVINO model, calibrated on tasks/kb/calibration.txt).
sentence-transformers' own `backend="onnx"` / `"openvino"` need optimum-onnx (transformers<4.58) or optimum-intel
(transformers<5.6), and fastembed needs huggingface-hub<2.0: none installs beside the pins. So the runtimes run
here directly on a `torch.onnx.export` of the model's transformer; pooling and normalization are
sentence-transformers' (mean, L2).

Speed: chunks/s over the same chunk texts, longest-first batches on every side.
Quality: recall@5 and MRR@5 on each QA set (a hit is a retrieved chunk holding an expected answer string): 500
generated questions over a generated corpus decide, the hand-written sample set is shown beside; plus the
cosine between each backend's vectors and PyTorch's.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from tasks.core.config import EmbedParams
from tasks.kb.embedder import last_hidden, make_embedder, mean_pooled, resolve_model_path
from tasks.kb.retrieval_eval import score_row

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
QUALITY_BAR_PTS = 0.5  # the bar for the default: recall@5 within half a point of PyTorch fp32


def missing_runtimes() -> list[str]:
    return [m for m in ("onnx", "onnxruntime", "openvino") if importlib.util.find_spec(m) is None]


def export_onnx(st_model, folder: Path) -> dict[str, Path]:
    """model.onnx (fp32) and model_int8.onnx next to it."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    bert = st_model[0].auto_model.eval()

    sample = st_model.tokenizer(["a warm-up sentence", "another one"], padding=True, return_tensors="pt")
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
    axes = {k: {0: "batch", 1: "seq"} for k in (*INPUTS, "last_hidden_state")}
    torch.onnx.export(
        last_hidden(bert),
        tuple(sample[k] for k in INPUTS),
        str(fp32),
        input_names=list(INPUTS),
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    quantize_dynamic(
        str(fp32),
        str(int8),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"MatMulConstBOnly": True},
    )
    return {"fp32": fp32, "int8": int8}


class RuntimeEncoder:
    """Tokenize like sentence-transformers, run a compiled graph, mean-pool, L2-normalize."""

    def __init__(self, tokenizer, max_len: int, run):
        self.tokenizer, self.max_len, self.run = tokenizer, max_len, run

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            enc = self.tokenizer(
                [texts[j] for j in idx], padding=True, truncation=True, max_length=self.max_len, return_tensors="np"
            )
            hidden = self.run({k: enc[k].astype(np.int64) for k in INPUTS})
            out[idx] = mean_pooled(hidden, enc["attention_mask"])
        return out


def onnxruntime_encoder(path: Path, tokenizer, max_len: int) -> RuntimeEncoder:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1  # ORT defaults to physical cores: 1 on a 2-vCPU VM
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return RuntimeEncoder(tokenizer, max_len, lambda feed: session.run(None, feed)[0])


def openvino_encoder(path: Path, tokenizer, max_len: int) -> RuntimeEncoder:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": os.cpu_count() or 1, "PERFORMANCE_HINT": "LATENCY"}
    )
    return RuntimeEncoder(tokenizer, max_len, lambda feed: compiled(feed)[0])


def retrieval_quality(vectors: np.ndarray, chunks: list[dict], queries: np.ndarray, qa: list[dict], k: int = 5):
    """recall@k and MRR@k (a hit = a retrieved chunk containing one of the row's answer strings), scored by
    eval-retrieval's own score_row on the in-memory ranking."""
    recall = mrr = 0.0
    for q, row in zip(queries, qa):
        hits = [chunks[i] for i in np.argsort(-(vectors @ q))[:k]]
        r, rr = score_row(hits, {**row, "doc_ids": []}, k)  # answers only, as this benchmark has always scored
        recall += r
        mrr += rr
    return round(100 * recall / len(qa), 1), round(mrr / len(qa), 3)


def compare_encoders(
    speed_texts: list[str],
    quality: dict[str, tuple[list[dict], list[dict]]],
    model_name: str,
    batch_size: int,
    work: Path,
    log,
) -> dict:
    """Each backend's chunks/s on `speed_texts`, and recall@5 / MRR@5 on each quality set (name -> (chunks, QA
    rows)); the first set decides. The default stays on the fastest backend losing < QUALITY_BAR_PTS there."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_model_path(model_name), device="cpu")
    max_len = int(st.max_seq_length)

    def pytorch(batch: int, autocast: bool = False):
        def encode(texts: list[str]) -> np.ndarray:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                vecs = st.encode(
                    texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )
            return vecs.astype(np.float32)

        return encode

    backends = {
        f"pytorch_fp32_batch{batch_size}": pytorch(batch_size),
        f"pytorch_fp32_batch{2 * batch_size}": pytorch(2 * batch_size),
        "pytorch_bf16_autocast": pytorch(batch_size, autocast=True),
    }
    missing = missing_runtimes()
    export_seconds = 0.0
    if not missing:
        t0 = time.perf_counter()
        files = export_onnx(st, work / "onnx")
        export_seconds = time.perf_counter() - t0
        ort_fp32 = onnxruntime_encoder(files["fp32"], st.tokenizer, max_len)
        ort_int8 = onnxruntime_encoder(files["int8"], st.tokenizer, max_len)
        ov_fp32 = openvino_encoder(files["fp32"], st.tokenizer, max_len)
        backends["onnxruntime_fp32"] = lambda texts: ort_fp32.encode(texts, batch_size)
        backends["onnxruntime_int8_dynamic"] = lambda texts: ort_int8.encode(texts, batch_size)
        backends["openvino_fp32"] = lambda texts: ov_fp32.encode(texts, batch_size)
    t0 = time.perf_counter()  # ragtune's own int8 encoder, as embed.backend=openvino-int8 ships it
    ov_int8 = make_embedder(EmbedParams(model=model_name, batch_size=batch_size, backend="openvino-int8"))
    load_seconds = time.perf_counter() - t0
    backends["openvino_int8_nncf (ragtune's embed.backend=openvino-int8)"] = ov_int8.embed
    results, reference, ref_speed, ref_quality = {}, None, None, None
    decide = next(iter(quality))
    for name, encode in backends.items():
        log(f"encoder {name}")
        encode(speed_texts[:batch_size])  # warm-up: first-call allocation and graph compilation
        t0 = time.perf_counter()
        vecs = encode(speed_texts)
        seconds = time.perf_counter() - t0
        res: dict = {"chunks_per_s": round(len(speed_texts) / seconds, 1)}
        for set_name, (chunks, qa) in quality.items():
            recall, mrr = retrieval_quality(
                encode([c["text"] for c in chunks]), chunks, encode([row["question"] for row in qa]), qa
            )
            res[set_name] = {"recall_at_5": recall, "mrr_at_5": mrr}
        if reference is None:
            reference, ref_speed, ref_quality = vecs, res["chunks_per_s"], res[decide]["recall_at_5"]
        else:
            cos = (vecs * reference).sum(1)
            res.update(
                speedup=round(res["chunks_per_s"] / ref_speed, 2),
                quality_loss_pts=round(ref_quality - res[decide]["recall_at_5"], 2),
                cosine_to_pytorch_min=round(float(cos.min()), 4),
                cosine_to_pytorch_mean=round(float(cos.mean()), 4),
            )
            res["meets_bar"] = res["speedup"] > 1.0 and res["quality_loss_pts"] < QUALITY_BAR_PTS
        results[name] = res
    winners = sorted((n for n, r in results.items() if r.get("meets_bar")), key=lambda n: -results[n]["speedup"])
    out = {
        "speed_chunks": len(speed_texts),
        "quality_sets": {name: {"questions": len(qa), "chunks": len(chunks)} for name, (chunks, qa) in quality.items()},
        "decided_on": decide,
        "batch_size": batch_size,
        "threads": os.cpu_count(),
        "backends": results,
        "bar": f"faster than PyTorch fp32 at batch {batch_size} and < {QUALITY_BAR_PTS} pt recall@5 loss on {decide}",
        "decision": (
            f"{winners[0]} is faster and within the bar"
            if winners
            else f"none is faster within the bar: the default stays PyTorch fp32 at batch {batch_size}"
        ),
    }
    if missing:
        out["skipped_runtimes"] = f"not installed ({', '.join(missing)}); pip install -c constraints.txt -e '.[bench]'"
    else:
        out["onnx_export_and_quantize_seconds"] = round(export_seconds, 1)
    out["int8_encoder_load_seconds"] = round(load_seconds, 2)  # built by make install: a load, not a build
    return out
