"""The store wrapper retries and rephrases only what the store raised; a bug in the caller surfaces as it is."""

from __future__ import annotations

import httpx
import pytest
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from tasks.core.config import IndexParams
from tasks.core.errors import StoreError
from tasks.kb.store import QdrantStore


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
