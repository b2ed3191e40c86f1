"""The test tiers (docs/layout.md): tests/unit is the fast tier (`make test-fast`); every other test module runs a
whole pipeline, a real server or a trained model, and says so with the slow marker."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def marks(path: Path) -> str:
    """The source of the module's pytestmark assignment ('' when there is none)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return ast.unparse(node.value)
    return ""


def test_every_module_outside_the_unit_tier_is_marked_slow():
    unmarked = [
        str(p.relative_to(TESTS))
        for p in sorted(TESTS.rglob("test_*.py"))
        if "unit" not in p.relative_to(TESTS).parts and "pytest.mark.slow" not in marks(p)
    ]
    assert not unmarked, f"mark these modules `pytestmark = pytest.mark.slow` or move them to tests/unit: {unmarked}"


def test_the_unit_tier_is_never_marked_slow():
    slow = [
        str(p.relative_to(TESTS))
        for p in sorted((TESTS / "unit").rglob("test_*.py"))
        if p.name != "test_tiers.py" and "mark.slow" in p.read_text()
    ]
    assert not slow, f"slow tests belong outside tests/unit: {slow}"
