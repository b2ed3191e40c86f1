"""Peer ingestion pipelines doing ragtune's job, each run as its own process (like `ragtune refresh`).

    python -m benchmarks.peers llamaindex --corpus DIR --state DIR
    python -m benchmarks.peers langchain  --corpus DIR --state DIR

Both use the same embedding model (the packaged all-MiniLM-L6-v2 through sentence-transformers, batch 64,
normalized), the same chunk size in the same tokenizer's tokens, and Qdrant local mode; their sync state
(LlamaIndex docstore, LangChain SQL record manager) lives in --state between runs. Prints one JSON line.

LlamaIndex: IngestionPipeline(SentenceSplitter, embedding) + persisted SimpleDocumentStore +
QdrantVectorStore, docstore_strategy=UPSERTS_AND_DELETE (changed documents re-embedded, vanished deleted).
LangChain: index(docs, SQLRecordManager, QdrantVectorStore, cleanup="full", source_id_key="source").
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tasks.kb.embedder import load_embedding_tokenizer, resolve_model_path

COLLECTION = "bench"
DIM = 384


def load_corpus(corpus: Path) -> list[tuple[str, str]]:
    """(document id = path relative to the corpus, text) for every markdown file, sorted."""
    return [(str(p.relative_to(corpus)), p.read_text(encoding="utf-8")) for p in sorted(corpus.rglob("*.md"))]


class CountingEncoder:
    """The shared sentence-transformers model; counts every text it embeds."""

    def __init__(self, model_name: str, batch_size: int):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(resolve_model_path(model_name), device="cpu")
        self.batch_size = batch_size
        self.embedded = 0

    def encode(self, texts: list[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).tolist()


def run_llamaindex(
    docs: list[tuple[str, str]],
    state: Path,
    enc: CountingEncoder,
    tokenizer,
    size: int,
    overlap: int,
    batch_points: int,
) -> dict:
    from llama_index.core import Document
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from pydantic import PrivateAttr
    from qdrant_client import QdrantClient

    class Embedding(BaseEmbedding):
        _enc: CountingEncoder = PrivateAttr()

        def __init__(self, encoder: CountingEncoder):
            super().__init__(model_name="all-MiniLM-L6-v2", embed_batch_size=encoder.batch_size)
            self._enc = encoder

        def _get_text_embeddings(self, texts):
            return self._enc.encode(texts)

        def _get_text_embedding(self, text):
            return self._enc.encode([text])[0]

        def _get_query_embedding(self, query):
            return self._enc.encode([query])[0]

        async def _aget_query_embedding(self, query):
            return self._get_query_embedding(query)

    client = QdrantClient(path=str(state / "qdrant"))
    splitter = SentenceSplitter(
        chunk_size=size,
        chunk_overlap=overlap,
        tokenizer=lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
    )
    pipeline = IngestionPipeline(
        transformations=[splitter, Embedding(enc)],
        docstore=SimpleDocumentStore(),
        vector_store=QdrantVectorStore(collection_name=COLLECTION, client=client, batch_size=batch_points),
        docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
    )
    if (state / "pipeline").exists():
        pipeline.load(str(state / "pipeline"))
    nodes = pipeline.run(documents=[Document(text=text, id_=doc_id) for doc_id, text in docs])
    pipeline.persist(str(state / "pipeline"))
    points = client.count(COLLECTION, exact=True).count if client.collection_exists(COLLECTION) else 0
    client.close()
    return {"nodes_written": len(nodes), "points": points}


def run_langchain(
    docs: list[tuple[str, str]],
    state: Path,
    enc: CountingEncoder,
    model_path: str,
    size: int,
    overlap: int,
    batch_points: int,
) -> dict:
    from langchain_classic.indexes import SQLRecordManager, index
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from qdrant_client import QdrantClient, models
    from transformers import AutoTokenizer

    class Embedding(Embeddings):
        def embed_documents(self, texts):
            return enc.encode(texts)

        def embed_query(self, text):
            return enc.encode([text])[0]

    client = QdrantClient(path=str(state / "qdrant"))
    if not client.collection_exists(COLLECTION):
        client.create_collection(
            COLLECTION, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
    store = QdrantVectorStore(client=client, collection_name=COLLECTION, embedding=Embedding())
    records = SQLRecordManager(f"qdrant/{COLLECTION}", db_url=f"sqlite:///{state / 'records.sqlite'}")
    records.create_schema()
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        AutoTokenizer.from_pretrained(model_path), chunk_size=size, chunk_overlap=overlap
    )
    chunks = splitter.split_documents(
        [Document(page_content=text, metadata={"source": doc_id}) for doc_id, text in docs]
    )
    result = index(chunks, records, store, cleanup="full", source_id_key="source", batch_size=batch_points)
    points = client.count(COLLECTION, exact=True).count
    client.close()
    return {"chunks": len(chunks), "points": points, **{k: int(v) for k, v in dict(result).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer", choices=["llamaindex", "langchain"])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--batch-size", type=int, default=64, help="texts per encode batch")
    ap.add_argument("--chunk-size", type=int, default=200, help="tokens per chunk")
    ap.add_argument("--overlap", type=int, default=32, help="tokens shared by neighbouring chunks")
    ap.add_argument("--points-batch", type=int, default=256, help="points per vector-store write")
    a = ap.parse_args()
    start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    a.state.mkdir(parents=True, exist_ok=True)

    enc = CountingEncoder(a.model, a.batch_size)
    docs = load_corpus(a.corpus)
    setup = time.perf_counter() - start
    t0 = time.perf_counter()
    if a.peer == "llamaindex":
        tokenizer, _ = load_embedding_tokenizer(a.model)
        out = run_llamaindex(docs, a.state, enc, tokenizer, a.chunk_size, a.overlap, a.points_batch)
    else:
        out = run_langchain(docs, a.state, enc, resolve_model_path(a.model), a.chunk_size, a.overlap, a.points_batch)
    print(
        json.dumps(
            {
                "peer": a.peer,
                "documents": len(docs),
                "embedded": enc.embedded,
                "setup_seconds": round(setup, 3),
                "run_seconds": round(time.perf_counter() - t0, 3),
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
