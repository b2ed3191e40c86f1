"""The store wrapper retries and rephrases only what the store raised; a bug in the caller surfaces as it is."""

from __future__ import annotations

import uuid

import httpx
import pytest
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tasks.core.config import IndexParams
from tasks.core.errors import StoreError
from tasks.kb.store import QdrantStore
from tasks.kb.vectors import Point


class Calls:
    """A callable that raises the given exceptions in turn, then returns 'ok'; it counts its calls."""

    def __init__(self, *raises: Exception):
        self.raises = list(raises)
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        if self.raises:
            raise self.raises.pop(0)
        return "ok"


def server_store() -> QdrantStore:
    return QdrantStore(None, IndexParams(retries=2, retry_backoff_s=0.0), "http://qdrant:6333", is_server=True)


def test_a_programming_error_is_neither_retried_nor_rephrased():
    call = Calls(TypeError("upsert() got an unexpected keyword argument 'pointz'"))
    with pytest.raises(TypeError, match="pointz"):
        server_store()._call("upsert", call)
    assert call.count == 1


def test_a_transport_error_is_retried_then_succeeds():
    call = Calls(ResponseHandlingException(httpx.ConnectError("refused")))
    assert server_store()._call("count", call) == "ok"
    assert call.count == 2


def test_a_dead_server_fails_in_one_line_naming_the_fix():
    call = Calls(*[ResponseHandlingException(httpx.ConnectError("refused"))] * 3)
    with pytest.raises(StoreError, match=r"failed after 3 attempt\(s\).*server is up") as err:
        server_store()._call("count", call)
    assert "\n" not in str(err.value)


def test_a_refusal_is_not_retried_and_says_it_was_refused():
    forbidden = UnexpectedResponse(403, "Forbidden", b"", httpx.Headers())
    call = Calls(forbidden)
    with pytest.raises(StoreError, match="refused the request: check QDRANT_API_KEY"):
        server_store()._call("upsert", call)
    assert call.count == 1


def fingerprint(dim: int = 4, model: str = "m1") -> dict:
    return {"dim": dim, "distance": "cosine", "sparse": True, "model": model, "chunking": "c"}


def write(client, run: str, n: int, fp: dict, rebuild: bool = False) -> tuple[QdrantStore, str | None]:
    store = QdrantStore(client, IndexParams(), "local", is_server=False)
    reason = store.ensure_collection(fp, run, rebuild)
    store.upsert([Point(str(uuid.UUID(int=i + 1)), [1.0] * fp["dim"], {"doc_id": f"d{i}"}) for i in range(n)])
    store.commit()
    return store, reason


def serving(client) -> int:
    return QdrantStore(client, IndexParams(), "local", is_server=False).count()


def test_a_rebuild_is_served_through_the_alias_only_once_published_and_rollback_swaps_back(tmp_path):
    """qdrant-client local mode keeps aliases and collection metadata as a server does."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store, reason = write(client, "20261101T000000Z", 3, fingerprint())
    assert reason is None and not store.has_collection(), "a first build is staged too: nothing serves yet"
    assert store.publish("20261101T000000Z")["published"] and serving(client) == 3
    store, reason = write(client, "20261102T000000Z", 2, fingerprint())  # same fingerprint: in place, served at once
    assert reason is None and serving(client) == 3 and store.publish("20261102T000000Z")["published"] is False
    store, reason = write(client, "20261103T000000Z", 5, fingerprint(model="m2"))
    assert reason == "model changed (m1 -> m2): every vector is invalid"
    staged = QdrantStore(client, IndexParams(), "local", is_server=False, staged="20261103T000000Z")
    assert serving(client) == 3 and staged.count() == 5, "readers keep the old collection; the gates read the new"
    with pytest.raises(StoreError, match="not built by this run .20261104T000000Z.*Nothing was published"):
        store.publish("20261104T000000Z")
    done = store.publish("20261103T000000Z")
    assert done == {
        "published": True,
        "serving": "ragtune--20261103T000000Z",
        "previous": "ragtune--20261101T000000Z",
        "generations_removed": 0,
    }
    assert serving(client) == 5
    with pytest.raises(StoreError, match="the previous index ragtune--20261101T000000Z was embedded with embed.model="):
        store.rollback("m2")  # queries would be embedded with m2, the index holds m1 vectors
    assert store.rollback("m1")["serving"] == "ragtune--20261101T000000Z" and serving(client) == 3
    store.rollback("m2")
    write(client, "20261105T000000Z", 1, fingerprint(model="m2"), rebuild=True)[0].publish("20261105T000000Z")
    names = {c.name for c in client.get_collections().collections}
    assert names == {"ragtune--20261103T000000Z", "ragtune--20261105T000000Z"}, "only serving + previous are kept"


def test_a_plain_collection_from_an_earlier_ragtune_is_refreshed_in_place_but_not_rebuilt(tmp_path):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("ragtune", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    store = QdrantStore(client, IndexParams(sparse=False), "local", is_server=False)
    assert store.ensure_collection({**fingerprint(), "sparse": False}, "r1") is None
    store = QdrantStore(client, IndexParams(sparse=False), "local", is_server=False)
    with pytest.raises(StoreError, match=r"must be rebuilt \(dim changed \(4 -> 8\).*Set index.collection to a new"):
        store.ensure_collection({**fingerprint(dim=8), "sparse": False}, "r2")
    assert {c.name for c in client.get_collections().collections} == {"ragtune"}
