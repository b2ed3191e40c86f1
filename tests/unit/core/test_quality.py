"""The GX helper adds a missing asset or batch definition, and lets every other GX error surface."""

from __future__ import annotations

import pytest

from tasks.core.quality import get_or_add


def missing(exc: Exception):
    def getter(name: str):
        raise exc

    return getter


@pytest.mark.parametrize("exc", [LookupError("no asset 'chunks'"), KeyError("no batch definition 'all'")])
def test_a_missing_object_is_added(exc):
    assert get_or_add(missing(exc), lambda name: f"added {name}", "chunks") == "added chunks"


def test_an_existing_object_is_returned_and_nothing_is_added():
    def adder(name: str):
        raise AssertionError("must not add an object that exists")

    assert get_or_add(lambda name: f"found {name}", adder, "chunks") == "found chunks"


@pytest.mark.parametrize("exc", [PermissionError("gx/great_expectations.yml"), ValueError("bad asset config")])
def test_any_other_error_surfaces_instead_of_adding_a_duplicate(exc):
    def adder(name: str):
        raise AssertionError("must not add after a real error")

    with pytest.raises(type(exc)):
        get_or_add(missing(exc), adder, "chunks")
